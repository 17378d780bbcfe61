"""Azure ML's documented defaults that more than one engine or CLI repeats: one place for each.

ParallelRunConfig (azureml-pipeline-steps 1.62 docstrings): ``error_threshold`` 10 failed items,
``run_max_try`` 3 tries per mini-batch, ``run_invocation_timeout`` 60 s per ``run()`` call,
``mini_batch_size`` 10 files for a FileDataset and 1 MB for a TabularDataset.
"""

PRS_ERROR_THRESHOLD = 10
PRS_RUN_MAX_TRY = 3
PRS_RUN_INVOCATION_TIMEOUT = 60
PRS_FILE_MINI_BATCH_SIZE = 10
PRS_TABULAR_MINI_BATCH_SIZE = "1MB"
