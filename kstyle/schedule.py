"""How long a run trains, and the ``fit`` calls that take it there.

A run's length comes from ``--epochs`` and ``--steps`` (:func:`total_steps_of`, said in one
line by :func:`steps_line`); Keras's ``fit`` counts in epochs of ``steps_per_epoch`` steps,
so :func:`fit_schedule` splits the run into calls that each start and end where the run does.
This module does not import TensorFlow.
"""

import dataclasses

from kstyle.constants import EPOCHS


@dataclasses.dataclass
class FitCall:
    """One ``fit`` call of a run: epochs ``[initial_epoch, epochs)`` of ``steps_per_epoch``."""

    start_step: int
    initial_epoch: int
    epochs: int
    steps_per_epoch: int


def fit_schedule(start_step: int, total_steps: int, steps_per_epoch: int) -> list[FitCall]:
    """The ``fit`` calls that take a run from ``start_step`` to ``total_steps``.

    Keras resumes only at epoch boundaries, so a run resumed mid-epoch first finishes that
    epoch in a call of its own; a last partial epoch (``--steps``) gets its own call too. Each
    call's progress bar therefore counts exactly the steps it will run.
    """
    calls = []
    step = start_step
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        if offset or total_steps - step < steps_per_epoch:
            count = min(steps_per_epoch - offset, total_steps - step)
            calls.append(FitCall(step, epoch, epoch + 1, count))
            step += count
        else:
            full = (total_steps - step) // steps_per_epoch
            calls.append(FitCall(step, epoch, epoch + full, steps_per_epoch))
            step += full * steps_per_epoch
    return calls


def total_steps_of(steps_per_epoch: int, epochs: int | None, steps: int | None) -> int:
    """Steps in the whole run: ``steps`` (the data repeating for as many epochs as they need),
    ``epochs`` epochs, or whichever stops first when both are given; neither: the reference's
    :data:`~kstyle.constants.EPOCHS` epochs."""
    if steps is None:
        return steps_per_epoch * (EPOCHS if epochs is None else epochs)
    return steps if epochs is None else min(steps, steps_per_epoch * epochs)


def steps_line(steps_per_epoch: int, epochs: int | None, steps: int | None) -> str | None:
    """One line saying how ``--steps`` (and ``--epochs``, if given too) set the run's length;
    None without ``--steps`` (the epochs alone say it)."""
    if steps is None:
        return None
    total = total_steps_of(steps_per_epoch, epochs, steps)
    used, partial = divmod(total, steps_per_epoch)
    count = used + bool(partial)
    length = f"{count} epoch{'s' * (count != 1)}" + (
        (" (the last one partial)" if count > 1 else " (partial)") if partial else ""
    )
    head = f"--steps {steps} on {steps_per_epoch} steps per epoch"
    if epochs is None:
        return f"{head}: {length}"
    if steps < steps_per_epoch * epochs:
        return f"{head} stops before --epochs {epochs} ({steps_per_epoch * epochs} steps): {length}"
    if steps > steps_per_epoch * epochs:
        return f"{head}: --epochs {epochs} stops first, after {total} steps"
    return f"{head}: {length}, as many as --epochs {epochs}"
