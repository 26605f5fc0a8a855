"""Train a fast style-transfer network: ``python train.py --style STYLE.jpg [--data DIR]``.

See ``python train.py --help``; the same command is installed as ``kstyle-train``.
"""

import sys

from kstyle.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
