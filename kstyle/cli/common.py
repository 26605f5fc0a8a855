"""What every kstyle command shares: one-line errors and exit codes instead of tracebacks,
the choice of oneDNN for the machine it runs on, and the console set-up of
:mod:`kstyle.cli.console`."""

import argparse
import errno
import os
import re
import sys

from kstyle.machine import cpu_flags, preferred_onednn, tensorflow_onednn_default


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


def start_command(args, task: str | None, from_shell: bool, onednn: bool | None = None):
    """What a command does once its arguments are parsed, before any work: picks oneDNN for
    ``task`` (``train``, ``stylize``; None: leave TensorFlow's default) when run from a shell
    (``onednn``: as ``kstyle tune`` measured, else by kstyle's rule), sets up logging from
    ``args.quiet``/``args.verbose``, and, from a shell, imports TensorFlow with its start-up
    lines kept off the console. Returns the ``kstyle`` logger."""
    from kstyle.cli.console import quiet_dependencies, setup_logging

    if task is not None and from_shell:
        use_fastest_onednn(task, None, onednn)
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


def use_fastest_onednn(task: str, argv, tuned: bool | None = None) -> None:
    """Switches oneDNN the faster way for ``task`` on this CPU, for a command run from a shell:
    ``tuned`` where ``kstyle tune`` measured it (:mod:`kstyle.tune_store`), else the rule of
    :func:`kstyle.machine.preferred_onednn`.

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
    wanted = preferred_onednn(task, flags) if tuned is None else tuned
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
