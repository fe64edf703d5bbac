"""Per-channel scale and shift `outputs = inputs * scale + shift` (batch/layer norm).

Approximations: "full" (`ScaleAndShiftFullFB`, default) or "diagonal"
(`ScaleAndShiftDiagonalFB`). `params` is `scale`, `(scale, shift)` or
`(None, shift)`; the block's key is the variables given (`shift` alone for
`(None, shift)`). `inputs` is the normalised tensor `x_hat` (for
`tf.nn.batch_normalization` or `tf.nn.fused_batch_norm`,
`(x - mean) * rsqrt(variance + epsilon)` with the moments the op used),
`outputs` the op's output.
"""

from kfac.ops._blocks.scale_and_shift import ScaleAndShiftDiagonalFB
from kfac.ops._blocks.scale_and_shift import ScaleAndShiftFullFB
from kfac.ops._registration.common import APPROX_DIAGONAL_NAME
from kfac.ops._registration.common import APPROX_FULL_NAME
from kfac.ops._registration.common import VARIABLE_SCOPE
from kfac.ops._registration.common import LayerKind
from kfac.ops._registration.common import register_layer
from kfac.ops._registration.shapes import check_rank
from kfac.ops._registration.shapes import check_same_dtype
from kfac.ops._registration.shapes import describe
from kfac.ops._registration.shapes import error
from kfac.ops._registration.shapes import static_shape

SCALE_AND_SHIFT = LayerKind(
    "scale_and_shift",
    {
        APPROX_FULL_NAME: ScaleAndShiftFullFB,
        APPROX_DIAGONAL_NAME: ScaleAndShiftDiagonalFB,
    },
    default=APPROX_FULL_NAME,
)
_METHOD = SCALE_AND_SHIFT.method


def split_scale_and_shift(params):
    """`(scale, shift, key)` from `scale`, `(scale, shift)` or `(None, shift)`."""
    if not isinstance(params, (tuple, list)):
        return params, None, params
    if len(params) != 2 or (params[0] is None and params[1] is None):
        raise error(
            _METHOD,
            "`params` must be a scale variable, a (scale, shift) pair or (None, "
            "shift); got {!r}.".format(params),
        )
    scale, shift = params
    if scale is None:
        return None, shift, shift
    if shift is None:
        return scale, None, scale
    return scale, shift, (scale, shift)


def broadcasts_onto(param_dims, tensor_dims) -> bool:
    """`param_dims` are the trailing part of `tensor_dims` up to 1s (an unknown
    tensor dimension matches anything), with fewer dimensions (batch first)."""
    if len(param_dims) >= len(tensor_dims):
        return False
    trailing = tensor_dims[len(tensor_dims) - len(param_dims) :]
    return all(d == 1 or t is None or d == t for d, t in zip(param_dims, trailing))


def _check_broadcasts(name, param, tensor_shape) -> None:
    """`param`'s static shape is the trailing part of the tensors' up to 1s."""
    shape = static_shape(param)
    if shape.rank is None or not shape.is_fully_defined():
        raise error(
            _METHOD, "`{}` needs a static shape; got {}.".format(name, describe(shape))
        )
    if tensor_shape.rank is None:
        return
    if not broadcasts_onto(shape.as_list(), tensor_shape.as_list()):
        raise error(
            _METHOD,
            "`{}` has shape {}; it must broadcast onto the trailing dimensions of "
            "the inputs and outputs {} (e.g. [channels], channels last).".format(
                name, describe(shape), describe(tensor_shape)
            ),
        )


def check_scale_and_shift(scale, shift, inputs, outputs) -> None:
    """Inputs and outputs `[batch, ..., C]` of one shape, the parameters onto them."""
    inputs_shape = check_rank(_METHOD, "inputs", inputs, (2, None), "[batch, ..., C]")
    outputs_shape = check_rank(
        _METHOD, "outputs", outputs, (2, None), "[batch, ..., C]"
    )
    if not inputs_shape.is_compatible_with(outputs_shape):
        raise error(
            _METHOD,
            "`inputs` {} and `outputs` {} must have the same shape.".format(
                describe(inputs_shape), describe(outputs_shape)
            ),
        )
    shape = inputs_shape.merge_with(outputs_shape)
    for name, param in (("scale", scale), ("shift", shift)):
        if param is not None:
            _check_broadcasts(name, param, shape)
    check_same_dtype(
        _METHOD,
        [("scale", scale), ("shift", shift), ("inputs", inputs), ("outputs", outputs)],
    )


def register_scale_and_shift(
    layer_collection, params, inputs, outputs, approx=None, reuse=VARIABLE_SCOPE
) -> None:
    """Registers `outputs = inputs * scale + shift` (batch norm, layer norm).

    Args:
      params: `scale`, `(scale, shift)` or `(None, shift)`; each `[C]` or any
        shape broadcasting onto the trailing dimensions of the inputs.
      inputs: the normalised tensor `x_hat [batch, ..., C]`.
      outputs: `x_hat * scale + shift` (the gradients are taken w.r.t. it).
      approx: "full" (`ScaleAndShiftFullFB`, default) or "diagonal".
      reuse: see `register_block`; reuse adds a tower.
    """
    scale, shift, key = split_scale_and_shift(params)

    def make_block(block_type, unused_approx):
        check_scale_and_shift(scale, shift, inputs, outputs)
        return block_type(layer_collection.factor_cache, scale=scale, shift=shift)

    register_layer(
        layer_collection,
        SCALE_AND_SHIFT,
        key,
        approx,
        reuse,
        make_block,
        (inputs, outputs),
    )
