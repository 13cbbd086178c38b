"""Benchmarks of aico, run from the repository root (`python -m bench.<name>`)."""
