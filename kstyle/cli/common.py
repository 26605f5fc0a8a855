"""What every kstyle command shares: one-line errors and exit codes instead of tracebacks,
the choice of oneDNN for the machine it runs on, and the console set-up of
:mod:`kstyle.cli.console`."""

import argparse
import errno
import os
import re
import sys


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``error: ...`` line and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_option(parser, *flags, doc, default=None, default_text=None, **kwargs):
    """``parser.add_argument(*flags, ...)`` whose help states the default once, at its end.

    ``default_text`` says the default in words (for None, or a flag that is off); otherwise a
    default that is not None or False is shown as its value. Required options, positional
    arguments and flags without ``default_text`` state none.
    """
    stated = default_text if default_text is not None else default
    if stated is not None and stated is not False and not kwargs.get("required"):
        doc = f"{doc} (default: {stated})"
    return parser.add_argument(*flags, default=default, help=doc.replace("%", "%%"), **kwargs)


# What an operating-system error means for the file it names, by errno.
_OS_ERROR_WHAT = {
    errno.ENOSPC: "no space left on the disk of",
    errno.EDQUOT: "disk quota exceeded for",
    errno.EROFS: "read-only file system:",
    errno.EACCES: "no permission for",
    errno.EPERM: "not permitted:",
    errno.ENAMETOOLONG: "file name too long:",
    errno.ENOTDIR: "a part of the path is not a folder:",
    errno.EISDIR: "is a folder:",
    errno.ENOENT: "cannot create or find",
    errno.EEXIST: "already exists:",
}


def os_error_line(error: OSError) -> str:
    """One line for an operating-system error: ``<what> <path>: <reason>``."""
    what = _OS_ERROR_WHAT.get(error.errno, "cannot use")
    path = error.filename if error.filename is not None else "a file"
    if error.errno == errno.EEXIST and os.path.isfile(str(path)):  # a file where a folder goes
        what = _OS_ERROR_WHAT[errno.ENOTDIR]
    reason = error.strerror or str(error)
    if reason.lower() == what.rstrip(":").lower():  # "read-only file system: x: Read-only ..."
        return f"{what} {path}"
    return f"{what} {path}: {reason}"


def _tensorflow_error_line(error) -> str | None:
    """One line for a TensorFlow file error that reached the command (a file it could not
    write or read, a full disk): its own first line. None for other exceptions, whose
    traceback a bug report needs."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    file_errors = (
        tf.errors.NotFoundError,
        tf.errors.PermissionDeniedError,
        tf.errors.AlreadyExistsError,
        tf.errors.FailedPreconditionError,
        tf.errors.ResourceExhaustedError,
        tf.errors.DataLossError,
    )
    if not isinstance(error, file_errors):
        return None
    from kstyle.errors import shortened

    message = (str(error.message).strip().splitlines() or [type(error).__name__])[0]
    return shortened(re.sub(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]$", "", message), 300)


def start_command(args, task: str | None, from_shell: bool):
    """What a command does once its arguments are parsed, before any work: picks oneDNN for
    ``task`` (``train``, ``stylize``; None: leave TensorFlow's default) when run from a shell,
    sets up logging from ``args.quiet``/``args.verbose``, and, from a shell, imports
    TensorFlow with its start-up lines kept off the console. Returns the ``kstyle`` logger."""
    from kstyle.cli.console import quiet_dependencies, setup_logging

    if task is not None and from_shell:
        use_fastest_onednn(task, None)
    logger = setup_logging(quiet=args.quiet, verbose=args.verbose)
    if from_shell:
        quiet_dependencies(verbose=args.verbose)
    return logger


def run_command(function, argv=None, **options) -> int:
    """Runs ``function(argv, **options)``: a KstyleError becomes ``error: ...`` on stderr and
    its code; an operating-system error (full disk, no permission, a name too long) or a
    TensorFlow file error becomes ``error: <what> <path>: <reason>`` and exit status 2; never
    a traceback for those."""
    from kstyle.errors import KstyleError

    try:
        return function(argv, **options) or 0
    except KstyleError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        line = _tensorflow_error_line(error)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2


ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# x86 CPU features for which TensorFlow's Linux builds switch oneDNN on by default
# (DefaultOneDnnPolicy in tensorflow/core/util/util.cc), as /proc/cpuinfo names them.
TENSORFLOW_ONEDNN_FEATURES = (
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


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


def tensorflow_onednn_default(flags: set[str]) -> bool:
    """Whether TensorFlow switches oneDNN on by itself on a Linux x86 CPU with ``flags`` (when
    ``TF_ENABLE_ONEDNN_OPTS`` is unset): only for CPUs with neural-network instructions."""
    return any(feature in flags for feature in TENSORFLOW_ONEDNN_FEATURES)


def preferred_onednn(task: str, flags: set[str]) -> bool | None:
    """Whether ``task`` (``train`` or ``stylize``) runs faster with oneDNN on a CPU with
    ``flags``; None where kstyle has no measurement (not an x86 CPU with AVX2).

    The rule comes from ``bench/bench.py`` measurements (docs/performance.md): training is
    faster with oneDNN whatever the vector width; batch-1 stylizing is faster with oneDNN's
    AVX-512 kernels but slower with its AVX2 ones. TensorFlow's own default
    (:func:`tensorflow_onednn_default`) gets training on AVX2 and stylizing on plain AVX-512
    wrong.
    """
    if "avx2" not in flags:
        return None
    if task == "train":
        return True
    return "avx512f" in flags


def use_fastest_onednn(task: str, argv) -> None:
    """Switches oneDNN the faster way for ``task`` on this CPU, for a command run from a shell.

    TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it is imported, so the variable is
    set here, before the command imports TensorFlow. Where TensorFlow is imported already
    (a program that imported it first), the command starts again with the variable set, if it
    can be started again as it was (not stdin, not an interactive session). Nothing happens
    when the user set the variable, when ``argv`` was passed in (a call from Python, not a
    command line), when TensorFlow's default is already the faster setting, or where
    :func:`preferred_onednn` has no opinion.
    """
    if argv is not None or ONEDNN_VARIABLE in os.environ:
        return
    flags = cpu_flags()
    wanted = preferred_onednn(task, flags)
    if wanted is None or wanted == tensorflow_onednn_default(flags):
        return
    if "tensorflow" not in sys.modules:
        os.environ[ONEDNN_VARIABLE] = "1" if wanted else "0"
        return
    if not _can_start_again():
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
