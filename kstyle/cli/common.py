"""What every kstyle command shares: one-line errors and exit codes instead of tracebacks."""

import sys


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
