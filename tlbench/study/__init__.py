"""The study: sweeps, their executors, results on disk, status, checks and recommendations."""
