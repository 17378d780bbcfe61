"""The SDK-neutral core: pipeline definition types, the plan, and the readers that build a plan."""
