"""Optional dependencies: each feature's extra, and the one-line error when it is missing.

The core install (``pip install kstyle``) trains and stylizes photos. Exporting, video and
the tensorflow-datasets route each need an extra; :func:`require` imports a module of one
and, where it is missing, raises a :class:`KstyleError` naming the command that installs it.
"""

import importlib

from kstyle.errors import KstyleError

# extra -> what it is for, as the error message says it
EXTRAS = {
    "export": "exporting and verifying TFLite and ONNX files",
    "video": "reading and writing video",
    "coco": "training on a tensorflow-datasets dataset",
}


def install_command(extra: str) -> str:
    """The pip command that installs ``extra``, e.g. ``pip install "kstyle[video]"``."""
    return f'pip install "kstyle[{extra}]"'


def require(module: str, extra: str):
    """Imports and returns ``module``, part of the extra ``extra``.

    Raises:
        KstyleError: (exit status 2) the module, or one it needs, is not installed; the
            message names the feature and the ``pip install`` command of its extra.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; kstyle has {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = getattr(error, "name", None) or module
        raise KstyleError(
            f"{EXTRAS[extra]} needs {missing!r}, which is not installed: "
            f"run {install_command(extra)}"
        ) from error
