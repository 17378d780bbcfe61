"""``python -m pipelines.local.parallel_run``: run a ParallelRunStep entry script on this machine."""

import gc
import sys

from pipelines.local.parallel_run.cli import main

if __name__ == "__main__":
    code = main()
    gc.freeze()  # a quick exit after MLflow was loaded: no final walk over all its objects
    sys.exit(code)
