"""MLproject entry point `explain`: the controlled experiment of `study explain` (`question`
size or gap), analyzed and reported; the verdict lands on the entry point's run (the study's
parent run)."""

import sys

from study.mlproject import mlproject_main

if __name__ == "__main__":
    # `epochs` defaults to "" (dropped): each question's own default applies (1 for size, 6
    # for gap). An explicit value equal to the study's default (3) must stay.
    sys.exit(mlproject_main("explain", sys.argv[1:], keep=("epochs",)))
