"""`LayerParametersDict`: the blocks of a collection, keyed by their parameters."""

import collections

from kfac.ops._registration.keys import canonical_key
from kfac.ops._registration.keys import name_of
from kfac.ops._utils.containers import ensure_sequence


class LayerParametersDict(collections.OrderedDict):
    """An OrderedDict keyed by a Tensor/Variable or a tuple of them.

    No single tensor may belong to two keys. Keys are canonicalised (list ->
    tuple). Deleting a key forgets every tensor in it (the original failed on
    tuple keys, API.md §12).
    """

    def __init__(self, *args, **kwargs):
        self._tensors = set()
        super().__init__(*args, **kwargs)

    def __setitem__(self, key, value):
        key = canonical_key(key)
        if not super().__contains__(key):
            tensors = ensure_sequence(key)
            collisions = self._tensors.intersection(tensors)
            if collisions:
                raise ValueError(
                    "Key(s) already present: {}".format(
                        ", ".join(name_of(t) for t in collisions)
                    )
                )
            self._tensors.update(tensors)
        super().__setitem__(key, value)

    def __getitem__(self, key):
        return super().__getitem__(canonical_key(key))

    def __contains__(self, key):
        return super().__contains__(canonical_key(key))

    def __delitem__(self, key):
        key = canonical_key(key)
        super().__delitem__(key)
        self._tensors.difference_update(ensure_sequence(key))

    def pop(self, key, *default):
        key = canonical_key(key)
        if super().__contains__(key):
            value = super().__getitem__(key)
            del self[key]
            return value
        return super().pop(key, *default)

    def popitem(self, last=True):
        key, value = super().popitem(last=last)
        self._tensors.difference_update(ensure_sequence(key))
        return key, value

    def clear(self):
        super().clear()
        self._tensors.clear()
