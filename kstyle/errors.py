"""The one exception type that kstyle's CLIs turn into a one-line message and exit status."""


class KstyleError(Exception):
    """A problem with the user's input or environment, explained in one line.

    ``exit_code`` is what the command-line tools exit with (2 for usage and input errors).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
