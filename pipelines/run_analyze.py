"""MLproject entry point `analyze` (see `study analyze --help`)."""

import sys

from study.cli import main

if __name__ == "__main__":
    sys.exit(main(["analyze", *sys.argv[1:]]))
