"""Benchmarks: each reports ratios taken in one run (see docs/PERFORMANCE.md)."""
