"""The local workspace control plane: publishing, run queue, schedules, keys, model registry and the HTTP service."""
