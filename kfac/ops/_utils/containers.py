"""Small container helpers: `SequenceDict` and `ensure_sequence`."""

from typing import Any
from typing import Iterable
from typing import Optional


class SequenceDict(object):
    """A dict whose item access also accepts a tuple/list of keys.

    The estimator maps variables to vectors with it; a block's key may be a tuple
    of variables, and `d[(v1, v2)]` then returns `[d[v1], d[v2]]`. Keys are
    compared as dict keys (tensors and variables by identity in graph mode).
    """

    def __init__(self, iterable: Optional[Iterable[Any]] = None):
        self._dict = dict(iterable) if iterable is not None else {}

    def __getitem__(self, key_or_keys):
        """Returns the value of one key, or a list of values for a tuple/list."""
        if isinstance(key_or_keys, (tuple, list)):
            return [self[key] for key in key_or_keys]
        return self._dict[key_or_keys]

    def __setitem__(self, key_or_keys, val_or_vals):
        """Assigns one value, or zips a tuple/list of keys with as many values."""
        if isinstance(key_or_keys, (tuple, list)):
            values = list(val_or_vals)
            if len(values) != len(key_or_keys):
                raise ValueError(
                    "SequenceDict: %d keys were given but %d values (expected as many "
                    "values as keys)." % (len(key_or_keys), len(values))
                )
            for key, value in zip(key_or_keys, values):
                self[key] = value
        else:
            self._dict[key_or_keys] = val_or_vals

    def items(self):
        """Returns the `(key, value)` pairs as a list."""
        return list(self._dict.items())


def ensure_sequence(obj: Any):
    """Returns `obj` if it is a tuple or list, else the 1-tuple `(obj,)`."""
    if isinstance(obj, (tuple, list)):
        return obj
    return (obj,)
