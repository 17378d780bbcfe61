"""SDK v2 (azure-ai-ml) pipeline jobs on this project's engines: ``python -m pipelines.v2 VERB ...``."""
