"""Metrics of an artifact against the float reference, and acceptance gates."""
