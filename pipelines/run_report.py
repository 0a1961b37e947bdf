"""MLproject entry point `report` (see `study report --help`)."""

import sys

from study.mlproject import mlproject_main

if __name__ == "__main__":
    # Bad input (a bad --compare-widths, say) leaves no FAILED entry run behind.
    sys.exit(mlproject_main("report", sys.argv[1:]))
