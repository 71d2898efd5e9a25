"""Benchmarks of the pure core, beside it rather than in it: ``python -m sync_pipelines.benchmarks.<name>``."""
