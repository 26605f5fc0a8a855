"""The measuring half of ``kstyle tune``: times the candidate paths in this process, whose
oneDNN setting (``TF_ENABLE_ONEDNN_OPTS``, read when TensorFlow is imported) the parent
(:mod:`kstyle.tuning`) chose, and writes what it measured as JSON.

    python -m kstyle.tune_worker REQUEST.json RESULT.json

Stylizing: each path of :data:`kstyle.stylize_paths.PATHS` asked for, at each size, on one
generated picture; its uint8 output is kept for the parent to compare with the reference
path's. Training: a step of the trainer ``kstyle train`` builds (untrained VGG-16: the same
arithmetic) with and without XLA, in float32 and bfloat16; its first two losses are kept for
the same comparison. Times are medians of calls after the first (which traces, compiles or
converts); a candidate already slower than ``best`` (seconds the parent has seen) by
:data:`GIVE_UP` after its second call is not timed further.
"""

import json
import os
import statistics
import sys
import time

import numpy as np

GIVE_UP = 1.5  # a candidate this many times slower than the best seen is not timed further
REPEATS = 3  # timed calls after the first, at most


def test_picture(size: int) -> np.ndarray:
    """A deterministic (size, size, 3) float32 picture of whole values in [0, 255] (as images
    decode): colour ramps, soft circles and fine noise, so that every layer sees structure at
    every scale."""
    rng = np.random.default_rng(size)
    rows, columns = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    picture = np.stack([rows, columns, 1 - (rows + columns) / 2], axis=-1) * 200
    for _ in range(6):
        centre, radius = rng.uniform(0, 1, 2), rng.uniform(0.05, 0.3)
        inside = (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 < radius**2
        picture[inside] = rng.uniform(0, 255, 3)
    picture += rng.normal(0, 6, picture.shape)
    return np.clip(np.rint(picture), 0, 255).astype(np.float32)


def time_calls(call, best=None, clock=time.perf_counter, repeats=REPEATS) -> dict:
    """Times ``call()``: ``first`` (seconds of the first call), ``seconds`` (the median of up
    to ``repeats`` more, or the second alone when it is :data:`GIVE_UP` times ``best``), the
    number ``timed`` and the first call's result as ``result``."""
    start = clock()
    result = call()
    first = clock() - start
    times = []
    for _ in range(repeats):
        start = clock()
        call()
        times.append(clock() - start)
        if best is not None and times[0] > GIVE_UP * best:
            break
    return {
        "first": first,
        "seconds": statistics.median(times),
        "timed": len(times),
        "result": result,
    }


def measure_stylize(model, sizes, paths, folder, clock=time.perf_counter, skip=(), on_row=None):
    """Rows ``{path, pixels, seconds, first, timed, output, item}`` (or ``error``) for each path
    of ``paths`` (name -> :class:`kstyle.stylize_paths.StylizePath`) at each size of ``sizes``
    (square sides, multiples of the net's size multiple), sizes outermost; each output is a
    uint8 ``.npy`` in ``folder``. ``item`` is ``[name, index of the size]``; items in ``skip``
    are not measured, and ``on_row`` (if any) is called with the rows so far after each."""
    rows = []
    for index, size in enumerate(sizes):
        batch = test_picture(size)[None]
        best = None
        for name, path in paths.items():
            row = {"path": name, "pixels": size * size, "item": [name, index]}
            if row["item"] in skip:
                continue
            try:
                timed = time_calls(lambda p=path, b=batch: p.run(model, b), best, clock)
            except Exception as error:  # a path this machine cannot run is not a candidate
                rows.append({**row, "error": _error_line(error)})
            else:
                output = os.path.join(folder, f"{name}-{size}.npy")
                np.save(output, np.clip(np.rint(timed.pop("result")), 0, 255).astype(np.uint8))
                rows.append({**row, **timed, "output": output})
                best = timed["seconds"] if best is None else min(best, timed["seconds"])
            if on_row is not None:
                on_row(rows)
    return rows


def measure_train(job: dict, candidates, best=None, clock=time.perf_counter, skip=(), on_row=None):
    """Rows ``{xla, precision, seconds, first, timed, losses, item}`` (or ``error``) for each
    ``(xla, precision)`` of ``candidates`` (its ``item``), ``skip`` and ``on_row`` as in
    :func:`measure_stylize`: one step of ``kstyle train``'s trainer of ``job`` (``arch``,
    ``padding``, ``image_size``, ``batch_size``) from the same weights and batch; ``losses``
    are the total losses of its first two steps. ``best``: the fastest seconds seen so far per
    precision (a candidate compares with its own precision's)."""
    rows, best = [], dict(best or {})
    for xla, precision in candidates:
        row = {"xla": xla, "precision": precision, "item": [xla, precision]}
        if row["item"] in skip:
            continue
        try:
            step, losses = _train_step(job, xla, precision)
            timed = time_calls(step, best.get(precision), clock)
        except Exception as error:
            rows.append({**row, "error": _error_line(error)})
        else:
            timed.pop("result")
            rows.append({**row, **timed, "losses": losses[:2]})
            best[precision] = min(best.get(precision, timed["seconds"]), timed["seconds"])
        if on_row is not None:
            on_row(rows)
    return rows


def _train_step(job: dict, xla: bool, precision: str):
    """A call that runs one training step, and the list its total losses are appended to."""
    import keras

    from kstyle.config import TrainConfig
    from kstyle.trainer import build_trainer

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    image_size, batch_size = job["image_size"], job["batch_size"]
    config = TrainConfig(
        style="",
        arch=job["arch"],
        padding=job["padding"],
        vgg_weights="random",
        image_size=image_size,
        batch_size=batch_size,
        mixed_precision=precision,
        jit_compile="on" if xla else "off",
    )
    trainer, _ = build_trainer(config, rng.uniform(0, 255, (image_size, image_size, 3)))
    batch = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    losses = []

    def step():
        trainer.train_on_batch(batch)
        losses.append(trainer.history_values()["loss"])

    return step, losses


def _error_line(error) -> str:
    lines = str(error).strip().splitlines() or [""]
    return f"{type(error).__name__}: {lines[0][:200]}"


def main(argv) -> int:
    """Reads the request, measures, and writes the result after each row (a crash keeps the
    rows before it); see the module's docstring."""
    with open(argv[0]) as file:
        request = json.load(file)
    from kstyle.stylize_paths import PATHS

    def write(rows):
        result = {"onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "rows": rows}
        with open(argv[1] + ".part", "w") as file:
            json.dump(result, file)
        os.replace(argv[1] + ".part", argv[1])

    skip = request.get("skip", [])
    if request["task"] == "stylize":
        from kstyle.forward import model_size_multiple, model_smallest_side
        from kstyle.inference import padded_side
        from kstyle.styles import styled_net
        from kstyle.transform_net import load_transform_net

        model = styled_net(load_transform_net(request["model"]))  # style 0 of several
        multiple, smallest = model_size_multiple(model), model_smallest_side(model)
        sizes = [padded_side(size, multiple, smallest) for size in request["sizes"]]
        paths = {name: PATHS[name] for name in request["paths"]}
        write([])  # set up: from here on, a stop is a candidate's
        measure_stylize(model, sizes, paths, request["folder"], skip=skip, on_row=write)
    else:
        candidates = [tuple(candidate) for candidate in request["candidates"]]
        write([])
        measure_train(request, candidates, request.get("best"), skip=skip, on_row=write)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
