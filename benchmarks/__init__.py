"""Benchmarks: clients of `datatuner_core`, run as modules from the repository root
(`python -m benchmarks.<name> --help`). What each measures, its command and its result files:
docs/benchmarks.md. The recorded figures live in benchmarks/results/ (tracked on purpose)."""
