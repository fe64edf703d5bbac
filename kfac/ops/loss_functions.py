"""loss_functions (work in progress)."""
