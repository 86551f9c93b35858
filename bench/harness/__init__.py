"""The benchmark harness behind `python -m bench.run` (see bench/README.md)."""
