"""estimator (work in progress)."""
