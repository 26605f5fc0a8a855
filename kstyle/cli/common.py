"""What every kstyle command shares: one-line errors and exit codes instead of tracebacks."""

import argparse
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
