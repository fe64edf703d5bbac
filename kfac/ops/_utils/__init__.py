"""Private building blocks of `kfac.ops.utils`, one family per file.

Import the public names from `kfac.ops.utils`; the split here only keeps each
idea (graph walking, linear algebra, patch extraction, ...) in a file of its own.
"""
