"""utils (work in progress)."""
