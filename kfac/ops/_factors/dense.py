"""Factors for generic parameters: the full and the naive diagonal Fisher.

Both use the "square of the summed gradient" estimate: with `g` the gradient
of the batch-summed loss w.r.t. all parameters (one column), `g gᵀ / B` is an
unbiased but high-variance estimate of the Fisher (Martens & Grosse 2015, §2).
"""

import tensorflow.compat.v1 as tf

from kfac.ops._factors import diagonal
from kfac.ops._factors import inverse_providing
from kfac.ops._factors import layer_data
from kfac.ops._factors import naming
from kfac.ops._utils import containers
from kfac.ops._utils import reshape


def _normalise_params_grads(params_grads) -> tuple:
    return tuple(
        containers.ensure_sequence(params_grad) for params_grad in params_grads
    )


def _num_elements(params_grad) -> int:
    size = 0
    for tensor in params_grad:
        num_elements = tensor.shape.num_elements()
        if num_elements is None:
            raise ValueError(
                "Generic factors need fully defined static shapes; got %s with "
                "shape %s." % (tensor, tensor.shape)
            )
        size += num_elements
    return size


class FullFactor(layer_data.SummedGradients, inverse_providing.InverseProvidingFactor):
    """Dense Fisher of all entries of some parameters: `Ĉ = g gᵀ / batch_size`.

    Args:
      params_grads: sequence over sources of a gradient Tensor or tuple of
        Tensors (the parameters' shapes), `g` is their concatenated column.
      batch_size: the number of examples the gradients were summed over
        (int or scalar Tensor).
    """

    def __init__(self, params_grads, batch_size):
        self._batch_size = naming.to_python_scalar(batch_size)
        self._params_grads = _normalise_params_grads(params_grads)
        super(FullFactor, self).__init__()

    @property
    def _var_scope(self):
        return "ff_full_" + naming.scope_string_from_params(
            [self._params_grads, self._batch_size]
        )

    @property
    def _cov_shape(self):
        size = _num_elements(self._params_grads[0])
        return (size, size)

    def _compute_new_cov(self, source, tower):
        del tower  # A single tower: the gradients are already summed over them.
        column = reshape.tensors_to_column(self._params_grads[source])
        return tf.matmul(column, column, transpose_b=True) / tf.cast(
            self._batch_size, column.dtype
        )


class NaiveDiagonalFactor(layer_data.SummedGradients, diagonal.DiagonalFactor):
    """Diagonal of `FullFactor`'s estimate: `Ĉ = (g∘g) / batch_size`, shape `[n, 1]`."""

    def __init__(self, params_grads, batch_size):
        self._params_grads = _normalise_params_grads(params_grads)
        self._batch_size = naming.to_python_scalar(batch_size)
        super(NaiveDiagonalFactor, self).__init__()

    @property
    def _var_scope(self):
        return "ff_naivediag_" + naming.scope_string_from_params(
            [self._params_grads, self._batch_size]
        )

    @property
    def _cov_shape(self):
        return [_num_elements(self._params_grads[0]), 1]

    def _compute_new_cov(self, source, tower):
        del tower  # A single tower: the gradients are already summed over them.
        column = reshape.tensors_to_column(self._params_grads[source])
        return tf.square(column) / tf.cast(self._batch_size, column.dtype)
