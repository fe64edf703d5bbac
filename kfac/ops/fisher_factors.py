"""fisher_factors (work in progress)."""
