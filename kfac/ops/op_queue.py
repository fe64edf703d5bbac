"""op_queue (work in progress)."""
