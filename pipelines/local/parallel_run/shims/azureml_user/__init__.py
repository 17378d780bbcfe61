"""Local stand-in for Azure's ``azureml_user`` package (ParallelRunStep workers' helper; not on PyPI)."""
