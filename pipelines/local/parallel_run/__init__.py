"""The local ParallelRunStep engine: options, mini-batches, scheduler, workers, output, report and its CLI.

``python -m pipelines.local.parallel_run`` runs an entry script on this machine; the pipeline engine
calls ``job.run_parallel``. ``shims/`` holds the ``azureml_user.parallel_run`` module entry scripts
import. This file stays light: the pipeline engine imports it for ``SHIMS_DIR`` alone.
"""

from pathlib import Path

SHIMS_DIR = Path(__file__).resolve().parent / "shims"
