"""MLproject entry point `doctor`: the checklist of why training loss rises, on this data and
model (see `study doctor --help`); exit 1 when a check fails."""

import sys

from study.mlproject import mlproject_main

if __name__ == "__main__":
    sys.exit(mlproject_main("doctor", sys.argv[1:]))
