"""Fully connected layers `outputs = inputs @ W (+ b)`, used once or several times.

Approximations: "kron" (`FullyConnectedKFACBasicFB`, default), "diagonal"
(`FullyConnectedDiagonalFB`), "ekfac" (`FullyConnectedEKFACFB`, George et al.
2018), and for inputs `[batch, ..., in]` the weight-sharing approximations of
Eschenhagen et al. (2023): "kron_expand" (every position an example: "kron"
itself, equal to reshaping inputs and outputs to rows) and "kron_reduce"
(`FullyConnectedKFACReduceFB`: each example's positions aggregated). Used
several times per example: "kron_indep" (`FullyConnectedMultiIndepFB`,
default; the same block as "kron_expand"), "kron_reduce"
(`FullyConnectedMultiReduceFB`), "kron_series_1" or "kron_series_2"
(`FullyConnectedSeriesFB` with `option` 1 or 2, bound by `functools.partial` as
in the original).

Padded batches: `mask` and/or `weights` (one number per position, see
`_factors/positions.py`) weight the layer's statistics; padded positions
contribute nothing and the normalisation counts real positions only.
"""

import functools

import numpy as np

from kfac.ops._blocks.diagonal import FullyConnectedDiagonalFB
from kfac.ops._blocks.eigenbasis import FullyConnectedEKFACFB
from kfac.ops._blocks.kronecker import FullyConnectedKFACBasicFB
from kfac.ops._blocks.kronecker import FullyConnectedKFACReduceFB
from kfac.ops._blocks.multi_use import FullyConnectedMultiIndepFB
from kfac.ops._blocks.multi_use import FullyConnectedMultiReduceFB
from kfac.ops._blocks.series import FullyConnectedSeriesFB
from kfac.ops._registration.common import APPROX_DIAGONAL_NAME
from kfac.ops._registration.common import APPROX_EKFAC_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_EXPAND_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_INDEP_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_REDUCE_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_SERIES_1_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_SERIES_2_NAME
from kfac.ops._registration.common import VARIABLE_SCOPE
from kfac.ops._registration.common import LayerKind
from kfac.ops._registration.common import check_weights_supported
from kfac.ops._registration.common import has_bias
from kfac.ops._registration.common import register_layer
from kfac.ops._registration.common import tower_arguments
from kfac.ops._registration.multi_use import multi_use_weights
from kfac.ops._registration.multi_use import register_multi_use_layer
from kfac.ops._registration.shapes import check_bias
from kfac.ops._registration.shapes import check_dim
from kfac.ops._registration.shapes import check_layer_dtype
from kfac.ops._registration.shapes import check_rank
from kfac.ops._registration.shapes import check_same_rows
from kfac.ops._registration.shapes import describe
from kfac.ops._registration.shapes import split_params
from kfac.ops._registration.weights import combine_mask_and_weights

FULLY_CONNECTED = LayerKind(
    "fully_connected",
    {
        APPROX_KRONECKER_NAME: FullyConnectedKFACBasicFB,
        APPROX_DIAGONAL_NAME: FullyConnectedDiagonalFB,
        APPROX_EKFAC_NAME: FullyConnectedEKFACFB,
        APPROX_KRONECKER_EXPAND_NAME: FullyConnectedKFACBasicFB,
        APPROX_KRONECKER_REDUCE_NAME: FullyConnectedKFACReduceFB,
    },
    default=APPROX_KRONECKER_NAME,
)
# Approximations whose statistics take position weights or a mask.
FULLY_CONNECTED_WEIGHTED = (
    APPROX_KRONECKER_NAME,
    APPROX_KRONECKER_EXPAND_NAME,
    APPROX_KRONECKER_REDUCE_NAME,
    APPROX_EKFAC_NAME,
)

FULLY_CONNECTED_MULTI = LayerKind(
    "fully_connected_multi",
    {
        APPROX_KRONECKER_INDEP_NAME: FullyConnectedMultiIndepFB,
        APPROX_KRONECKER_SERIES_1_NAME: functools.partial(
            FullyConnectedSeriesFB, option=1
        ),
        APPROX_KRONECKER_SERIES_2_NAME: functools.partial(
            FullyConnectedSeriesFB, option=2
        ),
        APPROX_KRONECKER_EXPAND_NAME: FullyConnectedMultiIndepFB,
        APPROX_KRONECKER_REDUCE_NAME: FullyConnectedMultiReduceFB,
    },
    default=APPROX_KRONECKER_INDEP_NAME,
)


def check_fully_connected_params(method: str, params):
    """Checks weights `[..., out]` (+ bias); returns `(in, out, shape)`.

    Weights of rank > 2 (a 1x1 convolution kernel `[1, 1, in, out]`) act on
    `in = prod(leading dims)` inputs, as `layer_params_to_mat2d` flattens them.
    Rank 0 or 1 is a warning (`in`/`out` unknown).
    """
    weights, bias = split_params(method, params)
    argument = "params[0]" if isinstance(params, (tuple, list)) else "params"
    shape = check_rank(method, argument, weights, (2, None), "[in, out]", strict=False)
    if shape.rank is None:
        fan_in = fan_out = None
    else:
        dims = shape.as_list()
        leading, fan_out = dims[:-1], dims[-1]
        fan_in = None if None in leading else int(np.prod(leading, dtype=np.int64))
    check_bias(method, bias, fan_out, shape)
    return fan_in, fan_out, shape


def check_fully_connected_io(
    method, params, inputs, outputs, names=("inputs", "outputs")
):
    """Checks inputs `[..., in]` and outputs `[..., out]` (pre-activations).

    Rank-2 `[batch, in]`/`[batch, out]` is the usual case; higher ranks are
    flattened to rows (every leading position is one input of the layer, as
    for a 1x1 convolution or a dense layer over `[batch, time, features]`).
    Either of `inputs`/`outputs` may be None to skip it.
    """
    fan_in, fan_out, weights_shape = check_fully_connected_params(method, params)
    reason = "to match weights of shape {}".format(describe(weights_shape))
    checked = []
    for name, value, size, symbol in (
        (names[0], inputs, fan_in, "in"),
        (names[1], outputs, fan_out, "out"),
    ):
        if value is None:
            continue
        shape = check_rank(
            method, name, value, (2, None), "[batch, {}]".format(symbol), strict=False
        )
        layout = "[batch, {}]" if shape.rank == 2 else "[batch, ..., {}]"
        check_dim(method, name, shape, -1, size, layout.format(size), reason)
        if shape.rank is not None:
            checked.append((name, shape))
    if len(checked) == 2:
        check_same_rows(method, *checked)
    check_layer_dtype(method, params, inputs, outputs, names)


def register_fully_connected(
    layer_collection,
    params,
    inputs,
    outputs,
    approx=None,
    reuse=VARIABLE_SCOPE,
    mask=None,
    weights=None,
) -> None:
    """Registers a fully connected layer `outputs = inputs @ W (+ b)`.

    Args:
      params: weights `[in, out]`, or a pair `(weights, bias [out])`.
      inputs: `[batch, in]`, or `[batch, ..., in]` (a dense layer over time
        steps or positions: every position is one row of the statistics).
      outputs: pre-activations `[batch, out]` (`[batch, ..., out]`, the same
        leading dims as `inputs`).
      approx: "kron" (`FullyConnectedKFACBasicFB`, default; also named
        "kron_expand"), "kron_reduce" (`FullyConnectedKFACReduceFB`: the
        positions of each of the `batch` examples aggregated), "diagonal"
        (`FullyConnectedDiagonalFB`) or "ekfac" (`FullyConnectedEKFACFB`).
      reuse: see `register_block`; reuse adds a tower.
      mask: (port addition) bool or 0/1 values of the leading dims of
        `outputs` (or a prefix of them, e.g. `[batch]`): 0 marks padding, which
        then contributes nothing to the statistics.
      weights: (port addition) non-negative weights of the same shape, e.g.
        per-example weights; combined with `mask` by product. Give the loss
        the same weights (`register_*_predictive_distribution(weights=...)`):
        the output-gradient statistics carry the loss's weights.
    """
    method = FULLY_CONNECTED.method
    position_weights = combine_mask_and_weights(
        method, mask, weights, outputs, "outputs"
    )

    def make_block(block_type, approx):
        check_fully_connected_io(method, params, inputs, outputs)
        check_weights_supported(
            FULLY_CONNECTED, approx, position_weights, FULLY_CONNECTED_WEIGHTED
        )
        return block_type(layer_collection.factor_cache, has_bias=has_bias(params))

    register_layer(
        layer_collection,
        FULLY_CONNECTED,
        params,
        approx,
        reuse,
        make_block,
        tower_arguments(inputs, outputs, position_weights),
    )


def register_fully_connected_multi(
    layer_collection,
    params,
    inputs,
    outputs,
    num_uses=None,
    approx=None,
    reuse=VARIABLE_SCOPE,
    mask=None,
    weights=None,
) -> None:
    """Registers a fully connected layer applied several times per example.

    Args:
      params: weights `[in, out]`, or `(weights, bias)`.
      inputs: list over uses of `[batch, in]`, or one folded `[num_uses*batch, in]`.
      outputs: list over uses of `[batch, out]`, or one folded tensor.
      num_uses: number of uses; required when both are folded.
      approx: "kron_indep" (default; also named "kron_expand": the uses as
        independent examples, `F ≈ num_uses·(A ⊗ G)`), "kron_reduce"
        (`FullyConnectedMultiReduceFB`: each example's uses aggregated),
        "kron_series_1" or "kron_series_2".
      reuse: see `register_block`; reuse adds a tower (mini-batch), not a use.
      mask: (port addition) which uses of which examples are real: a list
        over uses of `[batch]` values, one folded `[num_uses*batch]` tensor,
        or `[batch, num_uses]` (e.g. `tf.sequence_mask(lengths, num_uses)`).
        Padded uses contribute nothing; `F ≈ (real uses / real examples)·
        (A ⊗ G)` with the statistics of the real uses.
      weights: (port addition) non-negative weights in the same formats.
    """
    use_weights = multi_use_weights(
        FULLY_CONNECTED_MULTI.method, mask, weights, inputs, num_uses
    )
    register_multi_use_layer(
        layer_collection,
        FULLY_CONNECTED_MULTI,
        params,
        inputs,
        outputs,
        num_uses,
        approx,
        reuse,
        check_use=check_fully_connected_io,
        make_block=lambda block_type: block_type(
            layer_collection.factor_cache, has_bias=has_bias(params), num_uses=num_uses
        ),
        weights=use_weights,
    )
