"""The scale (gamma) and shift (beta) of batch and layer norms.

Patterns, each giving the normalised tensor `x_hat` as the layer's inputs and
`x_hat * scale + shift` as its outputs:
* `FusedBatchNorm*` (channels last): `x_hat` is rebuilt from the op's input,
  with the batch moments in training mode and the given mean and variance
  otherwise;
* `tf.nn.batch_normalization`, which computes `x * inv + (shift - mean *
  inv)` with `inv = rsqrt(variance + epsilon) * scale`: `x_hat = (x - mean) *
  rsqrt(variance + epsilon)`;
* a hand-written norm `x_hat * scale (+ shift)` (`Mul`, then `Add`/`AddV2`/
  `BiasAdd`);
* a shift alone: a variable added to a tensor that is not a layer's output
  (`Add`/`AddV2`/`BiasAdd`; `Sub(shift, mean * inv)` in
  `tf.nn.batch_normalization` without a scale).
A scale or shift must broadcast onto the trailing dimensions of the tensor.
"""

from typing import Optional

import tensorflow.compat.v1 as tf

from kfac.ops._graph_search.graph import LossGraph
from kfac.ops._graph_search.graph import Use
from kfac.ops._graph_search.layers import _attr
from kfac.ops._graph_search.layers import _static_dims
from kfac.ops._graph_search.layers import _text
from kfac.ops._graph_search.match import LayerMatch
from kfac.ops._registration.scale_and_shift import broadcasts_onto

_FUSED_BATCH_NORMS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
_ADD_OPS = ("Add", "AddV2", "BiasAdd")


def _broadcasts_onto(var, tensor) -> bool:
    """`var`'s shape (rank >= 1) broadcasts onto `tensor`'s trailing dimensions."""
    var_dims, dims = _static_dims(var), _static_dims(tensor)
    if not var_dims or dims is None:
        return False
    return broadcasts_onto(var_dims, dims)


def _match(scale, shift, x_hat, outputs, pattern, claims) -> LayerMatch:
    return LayerMatch(
        kind="scale_and_shift",
        params=(scale, shift),
        inputs=x_hat,
        outputs=outputs,
        options=(),
        pattern=pattern,
        claims=tuple(claims),
    )


def _other_operand(op, index):
    return op.inputs[1 - index]


def match_fused_batch_norm(graph: LossGraph, use: Use) -> Optional[LayerMatch]:
    """Gamma (input 1) of `FusedBatchNorm*`, or beta (input 2) without a gamma."""
    op = use.op
    if op.type not in _FUSED_BATCH_NORMS or use.index not in (1, 2):
        return None
    if _text(_attr(op, "data_format", b"NHWC")) not in ("NHWC", "NDHWC"):
        return None
    scale = graph.variable_of(op.inputs[1])
    if use.index == 2 and scale is not None:
        return None  # the scale's match covers the shift
    shift = graph.variable_of(op.inputs[2])
    x = op.inputs[0]
    epsilon = _attr(op, "epsilon", 1e-3)
    with tf.name_scope(op.name.split("/")[-1] + "_kfac_normalized"):
        if _attr(op, "is_training", True):
            axes = list(range(x.shape.rank - 1))
            mean, variance = tf.nn.moments(x, axes)
        else:
            mean, variance = op.inputs[3], op.inputs[4]
        x_hat = (x - mean) * tf.rsqrt(variance + epsilon)
    claims = [
        Use(var, op, index)
        for var, index in ((scale, 1), (shift, 2))
        if var is not None
    ]
    return _match(scale, shift, x_hat, op.outputs[0], op.type, claims)


def _add_of_variable(graph: LossGraph, tensor):
    """`(variable, Use, sum)` when `tensor`'s sole consumer adds a variable."""
    consumer = graph.sole_consumer(tensor)
    if consumer is None or consumer.type not in _ADD_OPS:
        return None
    for index in (0, 1):
        if consumer.inputs[1 - index] is tensor:
            var = graph.variable_of(consumer.inputs[index])
            if var is not None and _broadcasts_onto(var, tensor):
                return var, Use(var, consumer, index), consumer.outputs[0]
    return None


def _batch_normalization(graph: LossGraph, use: Use, inv):
    """The rest of `tf.nn.batch_normalization` after `inv = rsqrt * scale`.

    Returns `(x_hat, outputs, shift, shift Use)` or None: `inv` must feed
    `x * inv` and `mean * inv`, and `x * inv + (shift - mean * inv)` be formed.
    """
    rsqrt = _other_operand(use.op, use.index)
    products = graph.consumers(inv)
    if len(products) != 2 or any(op.type != "Mul" for op in products):
        return None
    for scaled, centre in (products, products[::-1]):
        total = graph.sole_consumer(scaled.outputs[0])
        offset = graph.sole_consumer(centre.outputs[0])
        if total is None or offset is None or offset.type != "Sub":
            continue
        if total.type not in ("Add", "AddV2") or offset.outputs[0] not in list(
            total.inputs
        ):
            continue
        x = scaled.inputs[0] if scaled.inputs[1] is inv else scaled.inputs[1]
        mean = centre.inputs[0] if centre.inputs[1] is inv else centre.inputs[1]
        with tf.name_scope(use.op.name.split("/")[-1] + "_kfac_normalized"):
            x_hat = (x - mean) * rsqrt
        shift = graph.variable_of(offset.inputs[0])
        shift_use = Use(shift, offset, 0) if shift is not None else None
        return x_hat, total.outputs[0], shift, shift_use
    return None


def match_scale(graph: LossGraph, use: Use) -> Optional[LayerMatch]:
    """`x_hat * scale (+ shift)`, or the scale of `tf.nn.batch_normalization`."""
    op = use.op
    if op.type != "Mul":
        return None
    x_hat = _other_operand(op, use.index)
    if graph.variable_of(x_hat) is not None:
        return None
    scale = use.variable
    if x_hat.op.type == "Rsqrt" and _static_dims(scale) is not None:
        found = _batch_normalization(graph, use, op.outputs[0])
        if found is not None:
            x_hat, outputs, shift, shift_use = found
            claims = [use] + ([shift_use] if shift_use is not None else [])
            return _match(
                scale, shift, x_hat, outputs, "tf.nn.batch_normalization", claims
            )
    if not _broadcasts_onto(scale, x_hat):
        return None
    found = _add_of_variable(graph, op.outputs[0])
    if found is None:
        return _match(scale, None, x_hat, op.outputs[0], "Mul", [use])
    shift, shift_use, outputs = found
    pattern = "Mul + " + shift_use.op.type
    return _match(scale, shift, x_hat, outputs, pattern, [use, shift_use])


def match_shift(graph: LossGraph, use: Use) -> Optional[LayerMatch]:
    """A shift alone: `x + shift`, or `Sub(shift, mean * inv)` then an add."""
    op = use.op
    if op.type == "Sub" and use.index == 0:
        total = graph.sole_consumer(op.outputs[0])
        if total is None or total.type not in ("Add", "AddV2"):
            return None
        inputs = [t for t in total.inputs if t is not op.outputs[0]]
        if len(inputs) != 1:
            return None
        outputs, pattern = total.outputs[0], "Sub + " + total.type
        x = inputs[0]
    elif op.type in _ADD_OPS:
        x = _other_operand(op, use.index)
        outputs, pattern = op.outputs[0], op.type
    else:
        return None
    if graph.variable_of(x) is not None or not _broadcasts_onto(use.variable, x):
        return None
    return _match(None, use.variable, x, outputs, pattern, [use])
