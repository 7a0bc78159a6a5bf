"""``python -m edgekd``: the same command line as ``edgekd``."""

import sys

from edgekd.cli import main

if __name__ == "__main__":
    sys.exit(main())
