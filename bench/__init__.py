"""Benchmarks (not part of the segflow package)."""
