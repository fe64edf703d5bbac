"""fisher_blocks (work in progress)."""
