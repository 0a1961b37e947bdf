"""MLproject entry point `study`: create or resume a study (see `study run --help`)."""

import sys

from study.mlproject import mlproject_main

if __name__ == "__main__":
    sys.exit(mlproject_main("run", sys.argv[1:]))
