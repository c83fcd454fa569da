"""Benchmarks: `python -m bench.<name>` each; every module has `run(...) -> dict`."""
