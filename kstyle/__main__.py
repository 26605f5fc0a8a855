"""``python -m kstyle``: the ``kstyle`` command."""

import sys

from kstyle.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
