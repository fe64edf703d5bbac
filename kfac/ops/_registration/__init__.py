"""Pieces of `kfac.ops.layer_collection`: approximation names and argument checks."""
