"""layer_collection (work in progress)."""
