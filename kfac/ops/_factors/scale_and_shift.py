"""Factors of a per-channel scale and shift, `outputs = inputs * scale + shift`.

Batch and layer norms end in such a layer: `inputs` is the normalised
`x_hat [B, ..., C]` and `scale`/`shift` have the trailing shape of the inputs
up to broadcasting (usually `[C]`). With `d = ∂L/∂outputs`, the gradient of
one example `b` is the sum over every position `p` it covers,

    g_scale[b] = Σ_p inputs[b, p] ∘ d[b, p],    g_shift[b] = Σ_p d[b, p],

reduced onto the parameter's shape, and the Fisher of the concatenated
`g[b] = [vec g_scale[b], vec g_shift[b]]` (in the order of
`tensors_to_column`) is estimated from those per-example gradients:

* `ScaleAndShiftFullFactor`: `(1/B) Σ_b g[b] g[b]ᵀ`, `[n, n]`;
* `ScaleAndShiftDiagonalFactor`: its diagonal `(1/B) Σ_b g[b]²`, `[n, 1]`.
"""

from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops._factors import diagonal
from kfac.ops._factors import inverse_providing
from kfac.ops._factors import layer_data
from kfac.ops._factors import naming
from kfac.ops._factors import statistics


def _reduce_onto(tensor, param_shape: Tuple[int, ...]) -> tf.Tensor:
    """`[B, ...]` summed onto `[B, prod(param_shape)]` (broadcast axes summed)."""
    rank = tensor.shape.ndims
    offset = rank - len(param_shape)
    axes = list(range(1, offset)) + [
        offset + index for index, size in enumerate(param_shape) if size == 1
    ]
    if axes:
        tensor = tf.reduce_sum(tensor, axes, keepdims=True)
    return tf.reshape(tensor, [-1, int(np.prod(param_shape, dtype=np.int64))])


class _ScaleAndShiftFactor(layer_data.InputsAndGradients):
    """Per-example gradients `g [B, n]` of a scale and shift (see the module).

    Args:
      inputs: per tower, the normalised inputs `[B, ..., C]`.
      outputs_grads: per source, per tower, the output gradients (same shape).
      scale_shape: the scale's static shape, or None without a scale.
      shift_shape: the shift's static shape, or None without a shift.
    """

    _SCOPE_PREFIX = None  # set by subclasses

    def __init__(
        self,
        inputs,
        outputs_grads,
        scale_shape: Optional[Tuple[int, ...]],
        shift_shape: Optional[Tuple[int, ...]],
    ):
        self._inputs = inputs
        self._outputs_grads = outputs_grads
        self._scale_shape = scale_shape
        self._shift_shape = shift_shape
        super(_ScaleAndShiftFactor, self).__init__()

    @property
    def _var_scope(self):
        return self._SCOPE_PREFIX + naming.scope_string_from_params(
            tuple(self._inputs) + tuple(statistics.flatten(self._outputs_grads))
        )

    @property
    def _dtype(self):
        return self._outputs_grads[0][0].dtype

    @property
    def _num_parameters(self) -> int:
        shapes = [s for s in (self._scale_shape, self._shift_shape) if s is not None]
        return sum(int(np.prod(shape, dtype=np.int64)) for shape in shapes)

    def _per_example_gradients(self, source, tower) -> Tuple[tf.Tensor, tf.Tensor]:
        """`(g [B, n], B)` for one source and tower."""
        outputs_grad = tf.convert_to_tensor(self._outputs_grads[source][tower])
        parts = []
        if self._scale_shape is not None:
            inputs = tf.cast(
                tf.convert_to_tensor(self._inputs[tower]), outputs_grad.dtype
            )
            parts.append(_reduce_onto(inputs * outputs_grad, self._scale_shape))
        if self._shift_shape is not None:
            parts.append(_reduce_onto(outputs_grad, self._shift_shape))
        gradients = parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)
        batch_size = tf.cast(tf.shape(outputs_grad)[0], gradients.dtype)
        return gradients, batch_size


class ScaleAndShiftFullFactor(
    _ScaleAndShiftFactor, inverse_providing.InverseProvidingFactor
):
    """`(1/B) Σ_b g[b] g[b]ᵀ`, `[n, n]`, with inverses and matrix powers."""

    _SCOPE_PREFIX = "ff_scaleshift_"

    @property
    def _cov_shape(self):
        return [self._num_parameters, self._num_parameters]

    def _compute_new_cov(self, source, tower):
        gradients, batch_size = self._per_example_gradients(source, tower)
        return tf.matmul(gradients, gradients, transpose_a=True) / batch_size


class ScaleAndShiftDiagonalFactor(_ScaleAndShiftFactor, diagonal.DiagonalFactor):
    """`(1/B) Σ_b g[b]²` as a column `[n, 1]`."""

    _SCOPE_PREFIX = "ff_scaleshiftdiag_"

    @property
    def _cov_shape(self):
        return [self._num_parameters, 1]

    def _compute_new_cov(self, source, tower):
        gradients, batch_size = self._per_example_gradients(source, tower)
        return tf.reshape(tf.reduce_sum(tf.square(gradients), 0), [-1, 1]) / batch_size
