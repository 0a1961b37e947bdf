"""MLproject entry point `trial`: train one fixed configuration (see `study trial --help`)."""

import sys

from study.mlproject import mlproject_main

if __name__ == "__main__":
    sys.exit(mlproject_main("trial", sys.argv[1:]))
