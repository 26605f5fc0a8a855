"""Export a trained network: ``python export.py runs/NAME --format all --output export/``.

See ``python export.py --help``; the same command is installed as ``kstyle-export``.
"""

import sys

from kstyle.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
