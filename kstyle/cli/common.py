"""What every kstyle command shares: one-line errors and exit codes instead of tracebacks,
and the choice of oneDNN for the machine it runs on."""

import argparse
import os
import sys


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``error: ...`` line and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def run_command(function, argv=None) -> int:
    """Runs ``function(argv)``; a KstyleError becomes ``error: ...`` on stderr and its code."""
    from kstyle.errors import KstyleError

    try:
        return function(argv) or 0
    except KstyleError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def cpu_flags(path="/proc/cpuinfo") -> set[str]:
    """The instruction-set flags of this CPU (Linux), or an empty set where unknown."""
    try:
        with open(path) as file:
            for line in file:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def preferred_onednn(task: str, flags: set[str]) -> bool | None:
    """Whether ``task`` (``train`` or ``stylize``) runs faster with oneDNN on a CPU with
    ``flags``; None where kstyle has no measurement (not an x86 CPU with AVX2).

    Measured with ``bench/bench.py`` (README, Performance): training is 1.4-1.7x faster with
    oneDNN whatever the vector width; batch-1 stylizing is 1.4x faster with oneDNN's AVX-512
    kernels but 2.0-2.5x slower with its AVX2 ones. TensorFlow's own default (on only for
    CPUs with AVX-512 VNNI, BF16 or AMX) gets training on AVX2 and stylizing on plain AVX-512
    wrong.
    """
    if "avx2" not in flags:
        return None
    if task == "train":
        return True
    return "avx512f" in flags


def use_fastest_onednn(task: str, argv) -> None:
    """Re-executes this command with oneDNN switched the faster way for ``task`` on this CPU.

    TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it is imported, and importing kstyle
    imports it, so a command whose setting is the slower one starts again with the variable
    set (one more import, a few seconds). Nothing happens when the user set the variable,
    when ``argv`` was passed in (a call from Python, not a command line), when the command
    cannot be started again as it was (stdin, an interactive session), or where
    :func:`preferred_onednn` has no opinion.
    """
    if argv is not None or ONEDNN_VARIABLE in os.environ or not _can_start_again():
        return
    wanted = preferred_onednn(task, cpu_flags())
    if wanted is None:
        return
    try:
        from tensorflow.python.util import _pywrap_util_port

        enabled = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return
    if enabled == wanted:
        return
    os.environ[ONEDNN_VARIABLE] = "1" if wanted else "0"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError:  # no interpreter to start again: go on with TensorFlow's setting
        del os.environ[ONEDNN_VARIABLE]


def _can_start_again() -> bool:
    """Whether running ``sys.orig_argv`` again repeats this command: a script or console
    script, ``-m`` or ``-c``; not a program read from stdin, nor an interactive session."""
    program = sys.argv[0] if sys.argv else ""
    if sys.flags.interactive or not sys.executable:
        return False
    return program == "-c" or os.path.isfile(program)
