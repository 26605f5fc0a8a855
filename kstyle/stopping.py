"""Stopping a run on request: SIGINT (Ctrl-C) and SIGTERM become a stop at the end of the
current step, with a checkpoint, and, from the command line, a prompt one whatever the run is
doing (see :class:`StopRequest`)."""

import contextlib
import os
import signal
import sys
import threading
import time

import keras

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and a preemptible VM's notice
# How long a hard stop waits for the current step to end: at least this, 1.5 times the last
# step's time where that is longer, but never more than the maximum (stops end within 10 s).
STOP_GRACE_SECONDS = 5.0
MAX_GRACE_SECONDS = 9.0


class TrainingStopped(Exception):
    """Training stopped at a step boundary because a stop signal arrived."""

    def __init__(self, signal_name):
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name


class StopRequest(keras.callbacks.Callback):
    """Turns SIGINT (Ctrl-C) and SIGTERM into a clean stop at the end of the current step.

    The first signal is remembered and training stops at the end of the current step: this
    callback (the last one) raises ``TrainingStopped``, so the step count, the weights and
    the history agree when the checkpoint is written. ``agree`` combines the flag over
    workers (see ``kstyle.distribute.agree_across_workers``): one preempted worker stops them
    all.

    With ``hard`` (what the command line uses) a stop is also prompt: should no step end
    within the grace time (5 s, or 1.5 times the last step's time up to 9 s), the process
    ends with exit status 130 and no new checkpoint, and a second signal ends it at once; the
    last checkpoint stays valid either way. The signals are then watched from a thread
    through ``signal.set_wakeup_fd``, because a Python signal handler runs only when the main
    thread comes back from TensorFlow's C++ code, which a blocked input pipeline may never
    let it do. Without ``hard`` (a library call), a second signal raises
    ``KeyboardInterrupt`` in the main thread, as Python does, and nothing ends the process.
    """

    def __init__(self, agree=None, hard=False, last_checkpoint=None):
        super().__init__()
        self.signal_name = None
        self.agree = agree or (lambda flag: flag)
        self.hard = bool(hard)
        self.last_checkpoint = last_checkpoint or (lambda: None)
        self.step_seconds = 0.0
        self._step_start = None
        self._deadline = None

    def grace_seconds(self) -> float:
        """How long a hard stop waits for the current step to end."""
        return min(MAX_GRACE_SECONDS, max(STOP_GRACE_SECONDS, 1.5 * self.step_seconds))

    def request(self, number, frame=None) -> None:
        """A stop signal arrived: the first is remembered, a second ends the run at once."""
        name = signal.Signals(number).name
        if self.signal_name is not None:
            if not self.hard:
                raise KeyboardInterrupt
            self._exit(f"stopped at once by a second {name}")
        self.signal_name = name
        grace = self.grace_seconds()
        within = f" (within {grace:.0f} s)" if self.hard else ""
        print(
            f"\n{name}: stopping after this step{within}; send it again to stop at once, "
            "without a checkpoint",
            file=sys.stderr,
            flush=True,
        )
        if self.hard:
            reason = f"{name}: no step ended within {grace:.0f} s"
            self._deadline = threading.Timer(grace, self._exit, (reason,))
            self._deadline.daemon = True
            self._deadline.start()

    def _exit(self, reason: str) -> None:
        kept = self.last_checkpoint()
        where = f"resume from the last checkpoint ({kept})" if kept else "no checkpoint yet"
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        print(f"error: {reason}; {where}", file=sys.stderr, flush=True)
        os._exit(130)  # a thread cannot raise into a main thread blocked in TensorFlow

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    @contextlib.contextmanager
    def handling_signals(self):
        """While in this block, SIGINT and SIGTERM go to :meth:`request` (see the class).

        Only in the main thread (Python delivers signals there); elsewhere nothing changes.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        if not self.hard:
            previous = {number: signal.signal(number, self.request) for number in STOP_SIGNALS}
            try:
                yield
            finally:
                for number, handler in previous.items():
                    signal.signal(number, handler)
            return
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        # Python's handler must exist for the wakeup fd to be written; the thread acts.
        previous = {number: signal.signal(number, _ignore) for number in STOP_SIGNALS}
        watcher = threading.Thread(target=self._watch, args=(read_end,), daemon=True)
        watcher.start()
        try:
            yield
        finally:
            self._cancel_deadline()  # the run is over: nothing may end the process later
            for number, handler in previous.items():
                signal.signal(number, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(write_end)  # the watcher reads the end of the pipe and returns
            watcher.join()
            os.close(read_end)

    def _watch(self, read_end) -> None:
        while data := os.read(read_end, 64):
            for number in data:
                if number in STOP_SIGNALS:
                    self.request(number)

    def check(self) -> None:
        """Raises ``TrainingStopped`` if a stop was asked for (on any worker)."""
        if self.agree(int(self.signal_name is not None)):
            self._cancel_deadline()  # a step boundary in time: the stop goes on cleanly
            raise TrainingStopped(self.signal_name or "a stop on another worker")

    def on_train_batch_begin(self, batch, logs=None):
        self._step_start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self._step_start is not None:
            self.step_seconds = time.monotonic() - self._step_start
        self.check()


def _ignore(number, frame):
    """A Python-level handler that does nothing: :class:`StopRequest`'s thread acts."""


def latest_checkpoint(directory: str) -> str | None:
    """The newest complete checkpoint in ``directory`` (None: none yet), without TensorFlow's
    help when TensorFlow is not loaded yet."""
    if "tensorflow" not in sys.modules or not os.path.isdir(directory):
        return None
    return sys.modules["tensorflow"].train.latest_checkpoint(directory)
