"""MLproject entry point `main`: run the study, then analyze it, then report it."""

import sys

from study.mlproject import main_pipeline

if __name__ == "__main__":
    sys.exit(main_pipeline(sys.argv[1:]))
