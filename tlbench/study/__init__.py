"""Sweeps: expansion, the stages, executors and workers, manifests, status, the compute gate."""
