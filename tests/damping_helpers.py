"""A damping function for factor tests (what blocks hand to their factors)."""


class DampingFunc(object):
    """Stand-in for fisher_blocks.PackagedFunc: callable with a stable `func_id`."""

    def __init__(self, value, func_id=None):
        self._value = value
        self.func_id = (value,) if func_id is None else tuple(func_id)

    def __call__(self):
        return self._value
