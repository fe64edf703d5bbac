"""optimizer (work in progress)."""
