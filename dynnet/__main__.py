"""`python -m dynnet` runs the command line (see dynnet.cli)."""

import sys

from dynnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
