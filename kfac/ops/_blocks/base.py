"""`FisherBlock`: the interface every block implements."""

import abc

from kfac.ops._factors import cache


class FisherBlock(object, metaclass=abc.ABCMeta):
    """Approximate Fisher (curvature) block for one layer's parameter group.

    Lifecycle: construct → `register_additional_tower(...)` (at least once) →
    `instantiate_factors(grads_list, damping)` → `register_matpower(exp)` → the
    factors' variables and update ops are made → `multiply_matpower`. Before
    `instantiate_factors` the factor attributes do not exist, so products fail
    with AttributeError.

    Subclasses fill in `instantiate_factors`, `register_matpower`,
    `multiply_matpower`, `tensors_to_compute_grads` and `num_registered_towers`;
    `multiply`, `multiply_inverse` and `register_inverse` are the powers 1 and −1.
    """

    def __init__(self, layer_collection):
        """Keeps the factor cache of `layer_collection` and its configuration.

        Args:
            layer_collection: a `LayerCollection` (its `factor_cache` builds and
                shares the factors), or any object with
                `make_or_get_factor(cls, args)`.
        """
        self._factors = cache.factor_cache_of(layer_collection)
        self._config = cache.config_of(self._factors)

    @abc.abstractmethod
    def instantiate_factors(self, grads_list, damping):
        """Creates (or fetches from the layer collection) this block's factors.

        Args:
            grads_list: tuple over sources; each entry has the nesting of
                `tensors_to_compute_grads()` and holds the loss gradients w.r.t.
                those tensors.
            damping: Python float, scalar Tensor or `tf.Variable`.
        """

    @abc.abstractmethod
    def register_matpower(self, exp):
        """Asks the factors to maintain what `multiply_matpower(·, exp)` needs."""

    def register_inverse(self):
        """`register_matpower(-1)`."""
        self.register_matpower(-1)

    @abc.abstractmethod
    def multiply_matpower(self, vector, exp):
        """`(F + damping)^exp · vector` for a vector in parameter format."""

    def multiply_inverse(self, vector):
        """`(F + damping)^{-1} · vector`."""
        return self.multiply_matpower(vector, -1)

    def multiply(self, vector):
        """`(F + damping) · vector`."""
        return self.multiply_matpower(vector, 1)

    @abc.abstractmethod
    def tensors_to_compute_grads(self):
        """Tensors whose loss gradients feed the factors."""

    @property
    @abc.abstractmethod
    def num_registered_towers(self):
        """Number of registered towers (mini-batch slices)."""

    @property
    def num_registered_minibatches(self):
        """`num_registered_towers` under its name in the earlier contrib releases."""
        return self.num_registered_towers
