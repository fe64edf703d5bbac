"""Generic blocks over all entries of a parameter group: full and naive diagonal.

Both estimate the Fisher from the gradient of the loss w.r.t. the parameters
themselves, summed over the batch ("square of the summed gradient"): valid for
any parameter, but high variance. Vectors are flattened with
`tensors_to_column` (a Tensor or a tuple of Tensors, in order).
"""

import tensorflow.compat.v1 as tf

from kfac.ops._blocks import damping as damping_lib
from kfac.ops._blocks.base import FisherBlock
from kfac.ops._factors import dense as dense_factors
from kfac.ops._utils import reshape


class FlattenedVectorProducts(object):
    """Products with one factor `_factor` over the flattened parameter vector.

    The factor is `[n, n]` (full) or `[n, 1]` (diagonal) over the column
    `tensors_to_column(vector)`; `_damping_func` is set by the block.
    """

    def multiply_matpower(self, vector, exp):
        """`(F + d I)^exp v` on the flattened vector, returned in `vector`'s format."""
        column = reshape.tensors_to_column(vector)
        out = self._factor.left_multiply_matpower(column, exp, self._damping_func)
        return reshape.column_to_tensors(vector, out)

    def full_fisher_block(self):
        """The undamped Fisher block: `[n, n]` (full) or its diagonal `[n, 1]`."""
        return self._factor.get_cov()


class _GenericParamsBlock(FlattenedVectorProducts, FisherBlock):
    """Shared part of `FullFB` and `NaiveDiagonalFB`: one factor on `params`."""

    _FACTOR_CLASS = None  # set by subclasses

    def __init__(self, layer_collection, params):
        """Creates a block over `params` (a Tensor/variable or a tuple of them)."""
        self._batch_sizes = []
        self._params = params
        super(_GenericParamsBlock, self).__init__(layer_collection)

    def instantiate_factors(self, grads_list, damping):
        # A list of params gives lists of gradients; factor keys must be hashable.
        grads_list = tuple(
            tuple(grads) if isinstance(grads, list) else grads for grads in grads_list
        )
        self._damping_func = damping_lib.constant_damping_func(damping)
        self._factor = self._factors.make_or_get_factor(
            self._FACTOR_CLASS, (grads_list, self._batch_size)
        )

    def tensors_to_compute_grads(self):
        return self._params

    def register_additional_tower(self, batch_size):
        """Adds a tower of `batch_size` examples (int or scalar Tensor)."""
        self._batch_sizes.append(batch_size)

    @property
    def num_registered_towers(self):
        return len(self._batch_sizes)

    @property
    def _batch_size(self):
        """Total batch size over towers (scalar Tensor)."""
        return tf.reduce_sum(self._batch_sizes)


class FullFB(_GenericParamsBlock):
    """Dense Fisher over all entries of `params`: `F = E[g gᵀ]`, `g` flattened.

    `multiply_matpower(v, exp) = (F + d I)^exp v` with `F` the factor's moving
    average of `g gᵀ / batch_size`.
    """

    _FACTOR_CLASS = dense_factors.FullFactor

    def register_matpower(self, exp):
        self._factor.register_matpower(exp, self._damping_func)


class NaiveDiagonalFB(_GenericParamsBlock):
    """Diagonal Fisher over all entries of `params`: `F = diag(E[g∘g])`.

    `multiply_matpower(v, exp) = (diag + d)^exp ∘ v`; powers are computed on
    demand, so `register_matpower` does nothing.
    """

    _FACTOR_CLASS = dense_factors.NaiveDiagonalFactor

    def register_matpower(self, exp):
        # Diagonal powers are computed when multiplying; nothing to maintain.
        pass
