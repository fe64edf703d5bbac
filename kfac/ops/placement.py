"""placement (work in progress)."""
