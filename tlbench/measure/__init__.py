"""Measurements of one model: exact FLOPs, interleaved timing, speedups, kernels, bench."""
