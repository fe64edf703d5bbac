"""Factors of fully connected layers `s = Wᵀ ã` (Martens & Grosse 2015, §3).

With `ã` the layer input (a trailing 1 appended when the layer has a bias) and
`g = ∂L/∂s` the per-example pre-activation gradient, the weight gradient of
one example is the outer product `ã gᵀ`.

* `FullyConnectedDiagonalFactor`: the diagonal Fisher, mean of `(ã gᵀ)²`;
* `FullyConnectedKroneckerFactor`: one Kronecker factor, `E[ã ãᵀ]` (A) or
  `E[g gᵀ]` (G).
"""

import tensorflow.compat.v1 as tf

from kfac.ops._factors import diagonal
from kfac.ops._factors import inverse_providing
from kfac.ops._factors import layer_data
from kfac.ops._factors import naming
from kfac.ops._factors import positions
from kfac.ops._factors import second_moments
from kfac.ops._factors import statistics


def _static_dim(tensor, index: int) -> int:
    return tf.compat.dimension_value(tensor.shape[index])


def as_rows(tensor) -> tf.Tensor:
    """`[..., n]` as `[rows, n]`: every leading position is one row.

    A fully connected layer applied to a `[batch, ..., n]` tensor (a 1x1
    convolution, a dense layer over time steps) sees one input per position;
    its statistics treat each as an example, exactly as if the user had
    reshaped inputs and outputs to rows before the layer.
    """
    tensor = tf.convert_to_tensor(tensor)
    if tensor.shape.ndims is not None and tensor.shape.ndims > 2:
        return tf.reshape(tensor, [-1, _static_dim(tensor, -1)])
    return tensor


class FullyConnectedDiagonalFactor(
    layer_data.InputsAndGradients, diagonal.DiagonalFactor
):
    """Diagonal Fisher of a fully connected layer, shape `[in + has_bias, out]`.

    `Ĉ = (1/B) Σ_b (ã_b ∘ ã_b)(g_b ∘ g_b)ᵀ`, the mean squared per-example weight
    gradient (the square of an outer product is the outer product of squares).

    Args:
      inputs: per tower, the layer inputs `[B, in]` (or `[B, ..., in]`, see
        `as_rows`).
      outputs_grads: per source, per tower, the pre-activation gradients `[B, out]`
        (or `[B, ..., out]`).
      has_bias: whether the layer has a bias (an extra input row of ones).
    """

    def __init__(self, inputs, outputs_grads, has_bias=False):
        self._inputs = inputs
        self._outputs_grads = outputs_grads
        self._has_bias = has_bias
        self._squared_inputs = None
        super(FullyConnectedDiagonalFactor, self).__init__()

    @property
    def _var_scope(self):
        return "ff_diagfc_" + naming.scope_string_from_params(
            tuple(self._inputs) + tuple(statistics.flatten(self._outputs_grads))
        )

    @property
    def _cov_shape(self):
        input_size = _static_dim(self._inputs[0], -1) + int(self._has_bias)
        output_size = _static_dim(self._outputs_grads[0][0], -1)
        return [input_size, output_size]

    @property
    def _dtype(self):
        return self._outputs_grads[0][0].dtype

    def make_covariance_update_op(self, ema_decay, non_finite_policy="skip"):
        # The squared inputs are shared by every source of a tower.
        self._squared_inputs = []
        for tower in range(self._num_towers):
            with statistics.place_on_device(self._get_data_device(tower)):
                inputs = as_rows(self._inputs[tower])
                if self._has_bias:
                    inputs = statistics.append_homog(inputs)
                self._squared_inputs.append(tf.square(inputs))
        return super(FullyConnectedDiagonalFactor, self).make_covariance_update_op(
            ema_decay, non_finite_policy=non_finite_policy
        )

    def _compute_new_cov(self, source, tower):
        squared_inputs = self._squared_inputs[tower]
        outputs_grad = as_rows(self._outputs_grads[source][tower])
        new_cov = tf.matmul(squared_inputs, tf.square(outputs_grad), transpose_a=True)
        return new_cov / tf.cast(tf.shape(squared_inputs)[0], new_cov.dtype)


class FullyConnectedKroneckerFactor(
    layer_data.SourcesByTowers, inverse_providing.InverseProvidingFactor
):
    """Kronecker factor `E[ã ãᵀ]` of a fully connected layer, `[n + has_bias]²`.

    `Ĉ = compute_cov(ã) = (1/N) Σ_rows ã ãᵀ` for each source and tower. Used for
    both the input factor A (tensors = layer inputs, one source) and the output
    factor G (tensors = pre-activation gradients, one per source).

    Args:
      tensors: per source, per tower, a `[B, n]` Tensor (or PartitionedTensor);
        `[B, ..., n]` is flattened to rows (`as_rows`).
      has_bias: append a homogeneous coordinate (input factor with bias).
      position_statistics: (port addition) a `positions.PositionStatistics`:
        weighted or masked rows, or KFAC-reduce aggregates over the positions
        of each example; None for the plain `(1/N) Σ_rows ã ãᵀ`.
    """

    def __init__(self, tensors, has_bias=False, position_statistics=None):
        self._tensors = tensors
        self._has_bias = has_bias
        self._position_statistics = position_statistics
        super(FullyConnectedKroneckerFactor, self).__init__()

    @property
    def _data(self):
        return self._tensors

    @property
    def _var_scope(self):
        return (
            "ff_fckron_"
            + naming.scope_string_from_params(
                tuple(statistics.flatten(self._tensors)) + (self._has_bias,)
            )
            + positions.scope_suffix(self._position_statistics)
        )

    @property
    def _cov_shape(self):
        size = _static_dim(self._tensors[0][0], -1) + int(self._has_bias)
        return [size, size]

    def _row_data(self, source, tower):
        """`(rows [N, n], row scale [N] or None, normalizer or None)` of one
        source and tower: the data as rows, or as `position_statistics` makes
        them (None: the plain statistic's)."""
        data = self._tensors[source][tower]
        if self._position_statistics is None:
            return as_rows(data), None, None
        return self._position_statistics.rows(data, tower)

    def _rows(self, source, tower):
        """`(rows ã [N, n (+1)], normalizer or None)` of one source and tower,
        each row scaled by its position weight's `s` (see `positions`)."""
        rows, row_scale, normalizer = self._row_data(source, tower)
        if self._has_bias:
            rows = statistics.append_homog(rows)
        return positions.scaled_rows(rows, row_scale), normalizer

    def _compute_new_cov(self, source, tower):
        # The ones column is folded in without copying the rows (second_moments).
        rows, row_scale, normalizer = self._row_data(source, tower)
        return second_moments.symmetric_second_moment(
            rows, normalizer, append_ones=self._has_bias, row_scale=row_scale
        )
