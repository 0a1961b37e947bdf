"""MLproject entry point `worker`: join an existing study (see `study worker --help`)."""

import sys

from study.mlproject import mlproject_main

if __name__ == "__main__":
    sys.exit(mlproject_main("worker", sys.argv[1:]))
