"""MLproject entry point `study`: create or resume a study (see `study run --help`)."""

import sys

from study.mlproject import study_pipeline

if __name__ == "__main__":
    sys.exit(study_pipeline(sys.argv[1:]))
