"""MLproject entry point `explain`: the controlled experiment of `study explain`, analyzed and
reported; the verdict lands on the entry point's run (the study's parent run)."""

import sys

from study.mlproject import mlproject_main

if __name__ == "__main__":
    # Explain's own epoch default (1) differs from the study's: an explicit 3 must stay.
    sys.exit(mlproject_main("explain", sys.argv[1:], keep=("epochs",)))
