"""MLproject entry point `report` (see `study report --help`)."""

import sys

from study.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
