"""Real-time serving: local deployments (records, supervisor, rollout) and the key check in front of the inference server."""
