"""K-FAC graph-building modules (the layout of the original `kfac.python.ops`)."""
