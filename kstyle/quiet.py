"""Known-harmless lines and warnings of dependencies, kept off the console.

TensorFlow writes its start-up lines (oneDNN, CUDA stubs, CPU features) from C++ through
absl before its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them; TFLite's
calibrator prints its settings from C++ on every int8 conversion, and LiteRT announces its
XNNPACK delegate on every interpreter. :func:`filtered_stderr` captures file descriptor 2
around such a call and writes back every line that is not one of these, so an unexpected
message still reaches the user.

Nothing is hidden once :func:`show_everything` was called (``-v``), or where the user set
``TF_CPP_MIN_LOG_LEVEL=0`` (asking for every line of TensorFlow's).
"""

import contextlib
import os
import re
import sys
import tempfile
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


def kept_lines(text: str) -> list:
    """The lines of ``text`` (each with its newline) that are not known-harmless."""
    lines = text.splitlines(True)
    no_driver = any(NO_CUDA_DRIVER.match(line) for line in lines)
    return [
        line
        for line in lines
        if not HARMLESS_LINES.match(line)
        and not (no_driver and NO_CUDA_DRIVER_CONSEQUENCES.match(line))
    ]


def ignore_harmless_warnings() -> None:
    """Ignores :data:`HARMLESS_WARNINGS` from now on (a command's process), unless
    :func:`hiding` says otherwise."""
    if hiding():
        for category, message in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)


@contextlib.contextmanager
def filtered_stderr():
    """Runs the block with file descriptor 2 captured (C and C++ output included), then writes
    the captured lines that are not known-harmless back to ``sys.stderr``; inside the block
    :data:`HARMLESS_WARNINGS` are ignored too.

    Does nothing where :func:`hiding` is off, or where descriptor 2 cannot be duplicated (no
    console at all)."""
    if not hiding():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as capture, warnings.catch_warnings():
        for category, message in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = kept_lines(capture.read().decode("utf-8", errors="replace"))
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
