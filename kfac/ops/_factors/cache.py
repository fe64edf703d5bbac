"""`FactorCache`: builds each factor once, so blocks on the same data share it.

Blocks ask the cache of their `LayerCollection` for factors; they never see the
collection itself. The cache builds every factor with the collection's
`KfacConfig`, in the collection's variable scope.
"""

import collections

import tensorflow.compat.v1 as tf

from kfac.ops import _config


class FactorCache(object):
    """Factors keyed by `(factor class, constructor args)`, in creation order.

    Attributes:
        factors: OrderedDict {(class, args) -> factor} (the collection's
            `fisher_factors`).
        config: the `KfacConfig` the factors (and the blocks asking) use.
    """

    def __init__(self, graph, var_scope: str, config: _config.KfacConfig):
        self.factors = collections.OrderedDict()
        self.config = config
        self._graph = graph
        self._var_scope = var_scope

    def make_or_get_factor(self, cls, args):
        """The factor `cls(*args)`, built once (in the owner's scope) and cached.

        Tensors compare by identity, so blocks fed the same tensors share factors.

        Raises:
          TypeError: if `args` cannot be hashed.
        """
        try:
            hash(args)
        except TypeError as error:
            raise TypeError(
                "Unable to use (cls, args) = ({}, {}) as a key in "
                "LayerCollection.fisher_factors. The pair cannot be hashed "
                "({}).".format(cls, args, error)
            ) from error
        key = (cls, args)
        if key not in self.factors:
            with self._graph.as_default(), tf.variable_scope(self._var_scope):
                with _config.building_with(self.config):
                    self.factors[key] = cls(*args)
        return self.factors[key]


def factor_cache_of(owner):
    """The `FactorCache` of a `LayerCollection`, or `owner` itself when it has
    none (any object with `make_or_get_factor(cls, args)` serves a block)."""
    return getattr(owner, "factor_cache", owner)


def config_of(factor_cache) -> _config.KfacConfig:
    """The configuration a block built on `factor_cache` uses (the defaults,
    read now, for a cache without one)."""
    config = getattr(factor_cache, "config", None)
    if isinstance(config, _config.KfacConfig):
        return config
    return _config.current()
