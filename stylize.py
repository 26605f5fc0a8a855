"""Stylize images: ``python stylize.py --model runs/NAME INPUT --output OUTPUT``.

See ``python stylize.py --help``; the same command is installed as ``kstyle-stylize``.
"""

import sys

from kstyle.cli.stylize import main

if __name__ == "__main__":
    sys.exit(main())
