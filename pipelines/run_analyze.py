"""MLproject entry point `analyze` (see `study analyze --help`)."""

import sys

from study.mlproject import mlproject_main

if __name__ == "__main__":
    # Bad input (a bad --compare-widths, say) leaves no FAILED entry run behind.
    sys.exit(mlproject_main("analyze", sys.argv[1:]))
