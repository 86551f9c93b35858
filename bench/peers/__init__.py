"""Peer implementations of Segflow's segmentation job, for side-by-side benchmarks."""
