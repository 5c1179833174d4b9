"""Measuring compute: FLOP counts and their per-part analytic cross-check."""
