"""Placeholder script (the exporter tests only read the steps)."""
