"""Known-harmless start-up lines of dependencies, kept off the console.

TensorFlow writes its start-up lines (oneDNN, CUDA stubs, CPU features) from C++ through
absl before its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them, and LiteRT
announces its XNNPACK delegate on every interpreter. :func:`filtered_stderr` captures file
descriptor 2 around such a call and writes back every line that is not one of these, so an
unexpected message still reaches the user.
"""

import contextlib
import os
import re
import sys
import tempfile

# One pattern per known-harmless line, matched from the line's start.
HARMLESS_LINES = re.compile(
    "|".join(
        (
            r"WARNING: All log messages before absl::InitializeLog\(\) is called",
            r"[IW]\d{4} [\d:.]+\s+\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\]",
            r"To enable the following instructions: .*rebuild TensorFlow",
            r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
        )
    )
)


@contextlib.contextmanager
def filtered_stderr(harmless=HARMLESS_LINES):
    """Runs the block with file descriptor 2 captured (C and C++ output included), then writes
    the captured lines that ``harmless`` does not match back to ``sys.stderr``.

    Does nothing where descriptor 2 cannot be duplicated (no console at all)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(True) if not harmless.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
