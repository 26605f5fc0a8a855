"""Three stages of a stream run one after another or overlapped: a producer, a transform and a
consumer (for videos: decode, stylize, encode).

Overlapped, the producer runs on a thread of its own and feeds a bounded queue, the transform
runs on the calling thread (where TensorFlow runs the model), and the consumer runs on another
thread reading a second bounded queue. At most ``2 * depth + 3`` items exist at once, however
long the stream. The first exception of any stage (KeyboardInterrupt included) stops the
others: every wait polls a stop flag, the caller's ``abort`` unblocks a consumer stuck in a
write, and the threads (daemons) are joined with a timeout. The exception is then raised on
the calling thread, as in the sequential run.
"""

import contextlib
import queue
import threading
from collections.abc import Callable, Generator

POLL_SECONDS = 0.1  # how often a waiting stage looks at the stop flag
JOIN_SECONDS = 5.0  # how long a stopped stage may take to end before it is left behind
PRODUCER_NAME, CONSUMER_NAME = "kstyle-pipeline-producer", "kstyle-pipeline-consumer"
_END = object()  # the last item of a queue


class _Stopped(Exception):
    """Raised in a stage waiting on a queue when another stage has failed."""


class _Shared:
    """The stop flag, the first failure, and waits on queues that give up once stopped."""

    def __init__(self):
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self._lock = threading.Lock()

    def fail(self, error: BaseException) -> None:
        """Records ``error`` if it is the first failure, and stops every stage."""
        with self._lock:
            if self.failure is None:
                self.failure = error
        self.stop.set()

    def put(self, box: queue.Queue, item) -> None:
        """Puts ``item`` in ``box``, waiting for room; raises _Stopped once stopped."""
        while not self.stop.is_set():
            try:
                box.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                pass
        raise _Stopped

    def get(self, box: queue.Queue):
        """The next item of ``box``, waiting for one; raises _Stopped once stopped."""
        while not self.stop.is_set():
            try:
                return box.get(timeout=POLL_SECONDS)
            except queue.Empty:
                pass
        raise _Stopped


def _produce(shared: _Shared, items: Generator, outbox: queue.Queue) -> None:
    """The producer thread: every item of ``items``, then the end mark; ``items`` is closed
    here, on the thread that ran it, however it ends."""
    try:
        with contextlib.closing(items):
            for item in items:
                shared.put(outbox, item)
            shared.put(outbox, _END)
    except _Stopped:
        pass
    except BaseException as error:  # noqa: BLE001 - handed to the calling thread
        shared.fail(error)


def _consume(shared: _Shared, inbox: queue.Queue, consume: Callable) -> None:
    """The consumer thread: ``consume(item)`` for each item until the end mark."""
    try:
        while (item := shared.get(inbox)) is not _END:
            consume(item)
    except _Stopped:
        pass
    except BaseException as error:  # noqa: BLE001 - handed to the calling thread
        shared.fail(error)


def run_sequential(items: Generator, transform: Callable, consume: Callable) -> None:
    """``consume(transform(item))`` for each item of ``items``, all on the calling thread, one
    item at a time; ``items`` is closed at the end, however it ends."""
    with contextlib.closing(items):
        for item in items:
            consume(transform(item))


def run_overlapped(
    items: Generator,
    transform: Callable,
    consume: Callable,
    *,
    depth: int = 2,
    abort: Callable[[], None] | None = None,
) -> None:
    """As :func:`run_sequential`, with the three stages overlapped (see the module).

    Args:
        items: a generator, run (and closed) on the producer thread.
        transform: called on the calling thread for each item, in order.
        consume: called on the consumer thread for each transformed item, in order.
        depth: items each of the two queues holds (at least 1).
        abort: called on the calling thread when a stage fails or the call is interrupted,
            before the threads are joined; it must unblock a ``consume`` stuck in a write
            (e.g. kill the process it writes to).

    Raises:
        The first exception raised by any stage, or KeyboardInterrupt.
    """
    shared = _Shared()
    inbox, outbox = queue.Queue(max(1, depth)), queue.Queue(max(1, depth))
    threads = (
        threading.Thread(
            target=_produce, args=(shared, items, inbox), name=PRODUCER_NAME, daemon=True
        ),
        threading.Thread(
            target=_consume, args=(shared, outbox, consume), name=CONSUMER_NAME, daemon=True
        ),
    )
    for thread in threads:
        thread.start()
    try:
        while (item := shared.get(inbox)) is not _END:
            shared.put(outbox, transform(item))
        shared.put(outbox, _END)
        while threads[1].is_alive() and not shared.stop.is_set():
            threads[1].join(POLL_SECONDS)
    except _Stopped:
        pass
    except BaseException as error:  # noqa: BLE001 - re-raised below, after the clean-up
        shared.fail(error)
    finally:
        shared.stop.set()
        if shared.failure is not None and abort is not None:
            abort()
        for thread in threads:
            thread.join(JOIN_SECONDS)
    if shared.failure is not None:
        raise shared.failure
