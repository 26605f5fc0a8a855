"""Known-harmless lines and warnings of dependencies, kept off the console.

TensorFlow writes its start-up lines (oneDNN, CUDA stubs, CPU features) from C++ through
absl before its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them; TFLite's
calibrator prints its settings from C++ on every int8 conversion, and LiteRT announces its
XNNPACK delegate on every interpreter. :func:`filtered_stderr` sends file descriptor 2
through a filter process around such a call, which writes on every line that is not one of
these as it comes, so an unexpected message still reaches the user, even one written just
before a crash.

Nothing is hidden once :func:`show_everything` was called (``-v``), or where the user set
``TF_CPP_MIN_LOG_LEVEL=0`` (asking for every line of TensorFlow's).
"""

import contextlib
import os
import re
import subprocess
import sys
import warnings

TF_LOG_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"


def _absl(levels: str, source: str) -> str:
    """The start of an absl log line (``I0000 00:00:1.5   123 port.cc:153] ``) of one of
    ``levels`` (letters of IWEF) from the C++ file(s) ``source`` (a regular expression)."""
    return rf"[{levels}]\d{{4}} [\d:.]+\s+\d+ ({source})\.cc:\d+\] "


# One pattern per known-harmless line, matched from the line's start.
HARMLESS_LINES = re.compile(
    "|".join(
        (
            # TensorFlow's start-up (written before TF_CPP_MIN_LOG_LEVEL applies)
            r"WARNING: All log messages before absl::InitializeLog\(\) is called",
            _absl("IW", "port|cudart_stub|cpu_feature_guard"),
            r"To enable the following instructions: .*rebuild TensorFlow",
            # LiteRT's interpreter
            r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
            # the TFLite converter (warnings at TF_CPP_MIN_LOG_LEVEL 0 and 1) and calibrator
            _absl("W", "tf_tfl_flatbuffer_helpers") + r"Ignored (output_format|drop_control_dep)",
            _absl("W", "flatbuffer_export") + r"Skipping runtime version metadata in the model",
            r"fully_quantize: \d+, inference_type: \d+, input_inference_type: ",
        )
    )
)

# A machine without a CUDA driver: cudart_stub says so, then CUDA's start-up fails (an error
# line where the user's TF_CPP_MIN_LOG_LEVEL lets errors through). The failure is harmless
# only after that notice; with a driver present it is a real problem and is kept.
NO_CUDA_DRIVER = re.compile(_absl("I", "cudart_stub") + "Could not find cuda drivers")
NO_CUDA_DRIVER_CONSEQUENCES = re.compile(_absl("E", "cuda_platform") + "failed call to cuInit")

# Python warnings of dependencies that say nothing about the user's run: (category, the
# message's start as a regular expression).
HARMLESS_WARNINGS = (
    (FutureWarning, r"In the future `np\.object` will be defined"),  # keras's tf2onnx shim
    # TFLite's QuantizationDebugger (the int8 export) builds tf.lite.Interpreters itself;
    # kstyle runs its models with ai_edge_litert
    (UserWarning, r"\s*Warning: tf\.lite\.Interpreter is deprecated"),
)

_shown = {"everything": False}


def show_everything(show: bool = True) -> None:
    """Whether kstyle lets every dependency line and warning through (``-v``), from now on."""
    _shown["everything"] = show


def hiding() -> bool:
    """Whether known-harmless dependency lines are hidden now: not after
    :func:`show_everything`, nor where the user set ``TF_CPP_MIN_LOG_LEVEL=0``."""
    return not _shown["everything"] and os.environ.get(TF_LOG_VARIABLE, "").strip() != "0"


def ignore_harmless_warnings() -> None:
    """Ignores :data:`HARMLESS_WARNINGS` from now on (a command's process), unless
    :func:`hiding` says otherwise."""
    if hiding():
        for category, message in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)


# The filter of :func:`filtered_stderr`, run as a child process: it reads what the parent
# writes to descriptor 2 and writes the lines that are not known-harmless on at once, so a
# message written just before the parent dies (an abort in C++) still reaches the console.
_FILTER_PROGRAM = """
import re, sys
harmless, no_driver, consequence = (re.compile(pattern) for pattern in sys.argv[1:4])
driverless = False
for raw in sys.stdin.buffer:
    line = raw.decode("utf-8", "replace")
    driverless = driverless or bool(no_driver.match(line))
    if not harmless.match(line) and not (driverless and consequence.match(line)):
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
"""
# How long the end of a block waits for the filter to write what it has read: past that, a
# process that the block started and that still holds descriptor 2 keeps the filter alive.
_FILTER_DRAIN_SECONDS = 5.0


def _start_filter(console: int):
    """The filter process, writing to ``console``; None where no interpreter can be started."""
    patterns = (HARMLESS_LINES, NO_CUDA_DRIVER, NO_CUDA_DRIVER_CONSEQUENCES)
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _FILTER_PROGRAM]
            + [pattern.pattern for pattern in patterns],
            stdin=subprocess.PIPE,
            stdout=console,
            stderr=console,
        )
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def filtered_stderr():
    """Runs the block with file descriptor 2 (C and C++ output included) sent through a
    filter process that drops the known-harmless lines and writes every other line on to the
    console as it comes; inside the block :data:`HARMLESS_WARNINGS` are ignored too. A line
    written just before the process aborts still gets through.

    Does nothing where :func:`hiding` is off, or where descriptor 2 cannot be duplicated or
    no filter process can be started."""
    if not hiding():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    process = _start_filter(saved)
    if process is None:
        os.close(saved)
        yield
        return
    with warnings.catch_warnings():
        for category, message in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        os.dup2(process.stdin.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            process.stdin.close()
            try:
                process.wait(timeout=_FILTER_DRAIN_SECONDS)
            except subprocess.TimeoutExpired:
                pass
