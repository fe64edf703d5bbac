"""Private implementation of `kfac.ops.fisher_blocks`, one block family per file.

Import the public names from `kfac.ops.fisher_blocks`; this layout may change.
"""
