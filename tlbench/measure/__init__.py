"""Measurement: FLOPs, throughput, bench, roofline, cost."""
