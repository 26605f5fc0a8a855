"""The one exception type that kstyle's CLIs turn into a one-line message and exit status, and
the helpers that keep such a message to one whole line."""

import re


class KstyleError(Exception):
    """A problem with the user's input or environment, explained in one line.

    ``exit_code`` is what the command-line tools exit with (2 for usage and input errors).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def cause_of(error: BaseException, limit: int = 200) -> str:
    """What went wrong, in one line: the first line of the error's message, or of the first
    chained cause that has one (a wrapper such as Keras's download ``Exception`` often holds
    the real reason, e.g. ``[Errno -3] Temporary failure in name resolution``, in its cause
    or in ``reason``). Falls back to the class name only for errors without any message. A
    line longer than ``limit`` characters is :func:`shortened`."""
    seen = set()
    current = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = getattr(current, "reason", None)  # urllib's URLError keeps its cause here
        if isinstance(reason, BaseException):
            current = reason
            continue
        if isinstance(current, OSError) and current.strerror:  # the path is said elsewhere
            return shortened(current.strerror, limit)
        for text in (str(reason) if reason is not None else "", str(current)):
            lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
            if lines and lines[0] not in ("None", "''"):
                return shortened(lines[0], limit)
        current = current.__cause__ or current.__context__
    return type(error).__name__


# The end of a sentence: a full stop, question or exclamation mark before a space (so the dots
# in ``model.keras`` or ``1.5`` are not ends).
_SENTENCE_END = re.compile(r"[.!?](?=\s)")


def shortened(text: str, limit: int = 200) -> str:
    """``text`` cut to at most ``limit`` characters, never inside a word: after the last whole
    sentence that fits, else at the last space that fits, with "…" marking the cut (a first
    word longer than ``limit``, such as a path, is kept whole). Text within the limit is
    returned as it is."""
    if len(text) <= limit:
        return text
    ends = [match.end() for match in _SENTENCE_END.finditer(text) if match.end() <= limit]
    if ends:
        return text[: ends[-1]]
    space = text.rfind(" ", 0, limit)
    if space <= 0:  # one long word (a path): kept whole
        space = text.find(" ")
        if space < 0:
            return text
    return text[:space].rstrip(" ,;:") + "…"
