"""The pipeline runtime: runs a plan step by step (engine, reuse, run records, warm interpreters, step host, local AutoML)."""
