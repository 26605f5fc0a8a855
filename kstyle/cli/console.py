"""What every command does with the console: its name as typed, ``-q``/``-v``, kstyle's log
messages on stderr (results go to stdout), and dependencies kept quiet."""

import logging
import os
import sys

from kstyle.quiet import (
    TF_LOG_VARIABLE,
    filtered_stderr,
    hiding,
    ignore_harmless_warnings,
    show_everything,
)

LOGGER_NAME = "kstyle"


def program_name(script: str | None = None) -> str:
    """The command as the user typed it, for usage lines: ``train.py``, ``kstyle-train``,
    ``python -m kstyle``; ``script`` where ``sys.argv[0]`` says nothing (an embedded call)."""
    program = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if os.path.basename(program) == "__main__.py":
        return f"python -m {os.path.basename(os.path.dirname(program)) or 'kstyle'}"
    if not program or program == "-c":
        return script or "kstyle"
    return os.path.basename(program)


def add_verbosity(parser) -> None:
    """Adds ``-q/--quiet`` and ``-v/--verbose`` to ``parser``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print only warnings, errors and results"
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print debug messages too, and TensorFlow's own start-up and C++ log lines",
    )


class _Formatter(logging.Formatter):
    def format(self, record):
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test may have replaced it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(quiet: bool = False, verbose: bool = False) -> logging.Logger:
    """Sends kstyle's log messages to stderr, one plain line each (``warning:``/``error:``
    before those levels): info and up by default, warnings and up with ``quiet``, debug too
    with ``verbose``. Returns the ``kstyle`` logger."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler):
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    return logger


def quiet_dependencies(verbose: bool = False) -> None:
    """Keeps TensorFlow's start-up lines and known-harmless dependency lines and warnings
    (:mod:`kstyle.quiet`) off the console, then imports TensorFlow (so call it after parsing
    the command line, and after ``use_fastest_onednn``, which must run before TensorFlow is
    imported).

    Nothing is hidden with ``verbose``, or where the user set ``TF_CPP_MIN_LOG_LEVEL=0``.
    Where the user set it to 1, 2 or 3, TensorFlow's C++ log lines follow that level (its
    warnings and errors, as that level allows), and the known-harmless start-up lines, which
    TensorFlow writes before any level applies, are dropped as by default. Unset, the level
    is 3 (no C++ log lines; a GPU that TensorFlow cannot use shows in ``kstyle info``, not
    as start-up noise)."""
    show_everything(verbose)
    if not hiding():
        return
    ignore_harmless_warnings()
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault(TF_LOG_VARIABLE, "3")
    with filtered_stderr():
        import tensorflow  # its start-up lines are written now

        # and CUDA's (it starts with the first look at the devices, or the first op)
        tensorflow.config.list_physical_devices()
