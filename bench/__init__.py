"""Performance benchmarks of kfac (run with `python -m bench.<name>`; see README.md)."""
