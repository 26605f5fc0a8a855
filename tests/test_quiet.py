"""Known-harmless dependency lines are dropped; every other line still reaches stderr."""

import os

from kstyle.quiet import filtered_stderr

TENSORFLOW_STARTUP = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795956895.818682   29284 port.cc:153] oneDNN custom operations are on.\n"
    "I0000 00:00:1795956895.819083   29284 cudart_stub.cc:31] Could not find cuda drivers\n"
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
)


def test_c_level_noise_is_dropped_and_the_rest_kept(capfd):
    with filtered_stderr():
        os.write(2, TENSORFLOW_STARTUP.encode())
        os.write(2, b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit\n")
        os.write(2, b"a real problem\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err.splitlines() == [
        "E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit",
        "a real problem",
        "after",
    ]


def test_output_is_written_back_when_the_block_fails(capfd):
    try:
        with filtered_stderr():
            os.write(2, b"why it failed\n")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert capfd.readouterr().err == "why it failed\n"
