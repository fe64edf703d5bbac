"""Dense, convolution and embedding layers: the op reading the weights.

Each matcher takes the use of a variable as the weights of a layer and
returns a `LayerMatch`, or None when the op is not that layer (a transposed
matmul, an explicit padding, channels first, ...). A bias is the variable
added to the layer's outputs right after it (`BiasAdd`, or `Add`/`AddV2` of
one entry per output channel) when those outputs have no other consumer.
"""

from typing import Optional

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops._graph_search.graph import LossGraph
from kfac.ops._graph_search.graph import Use
from kfac.ops._graph_search.match import LayerMatch

_ADD_OPS = ("Add", "AddV2")


def _attr(op, name, default=None):
    try:
        return op.get_attr(name)
    except ValueError:
        return default


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _static_dims(tensor):
    shape = tensor.shape
    return None if shape.rank is None else shape.as_list()


def _is_channel_vector(var, channels, allow_row: bool) -> bool:
    """`var` holds one entry per channel: `[C]`, or `[1, C]` if `allow_row`."""
    dims = _static_dims(var)
    if dims is None or channels is None:
        return False
    return dims == [channels] or (allow_row and dims == [1, channels])


def find_bias(graph: LossGraph, outputs, allow_row: bool):
    """`(bias variable, its Use, the biased outputs)` after `outputs`, or None."""
    consumer = graph.sole_consumer(outputs)
    if consumer is None:
        return None
    if consumer.type == "BiasAdd":
        if _text(_attr(consumer, "data_format", b"NHWC")) != "NHWC":
            return None
        candidates = [1] if consumer.inputs[0] is outputs else []
    elif consumer.type in _ADD_OPS:
        candidates = [i for i in (0, 1) if consumer.inputs[1 - i] is outputs]
    else:
        return None
    channels = _static_dims(outputs)
    channels = None if not channels else channels[-1]
    for index in candidates:
        bias = graph.variable_of(consumer.inputs[index])
        if bias is not None and _is_channel_vector(bias, channels, allow_row):
            return bias, Use(bias, consumer, index), consumer.outputs[0]
    return None


def _layer(
    graph, use, kind, inputs, outputs, options, pattern, allow_row=False, biased=True
):
    """The match, with the bias that follows `outputs` if `biased` and found."""
    found = find_bias(graph, outputs, allow_row) if biased else None
    claims = (use,)
    bias = None
    if found is not None:
        bias, bias_use, outputs = found
        claims += (bias_use,)
        pattern += " + " + bias_use.op.type
    return LayerMatch(
        kind=kind,
        params=(use.variable, bias),
        inputs=inputs,
        outputs=outputs,
        options=tuple(sorted(options.items())),
        pattern=pattern,
        claims=claims,
    )


def match_dense(graph: LossGraph, use: Use) -> Optional[LayerMatch]:
    """`inputs @ W` (`MatMul`, or `BatchMatMulV2/V3` of `[..., in]` inputs)."""
    op = use.op
    if use.index != 1 or _static_dims(use.variable) is None:
        return None
    if len(_static_dims(use.variable)) != 2:
        return None
    if op.type == "MatMul":
        if _attr(op, "transpose_a") or _attr(op, "transpose_b"):
            return None
    elif op.type in ("BatchMatMulV2", "BatchMatMulV3"):
        if _attr(op, "adj_x") or _attr(op, "adj_y"):
            return None
    else:
        return None
    return _layer(
        graph,
        use,
        "fully_connected",
        op.inputs[0],
        op.outputs[0],
        {},
        op.type,
        allow_row=True,
    )


def _conv_options(op, spatial: slice):
    """strides/dilations of the spatial dims, padding; None if unsupported."""
    padding = _text(_attr(op, "padding"))
    if padding not in ("SAME", "VALID"):
        return None
    if not _text(_attr(op, "data_format", b"NHWC")).endswith("C"):
        return None  # channels first
    strides = list(_attr(op, "strides"))[spatial]
    dilations = list(_attr(op, "dilations", [1] * 5))[spatial]
    return padding, strides, dilations


def match_conv2d(graph: LossGraph, use: Use) -> Optional[LayerMatch]:
    """`tf.nn.conv2d(inputs, filter)` (`Conv2D`, channels last)."""
    op = use.op
    if op.type != "Conv2D" or use.index != 1:
        return None
    options = _conv_options(op, slice(None))
    if options is None:
        return None
    padding, strides, dilations = options
    return _layer(
        graph,
        use,
        "conv2d",
        op.inputs[0],
        op.outputs[0],
        {"strides": tuple(strides), "padding": padding, "dilations": tuple(dilations)},
        "Conv2D",
    )


def match_conv3d(graph: LossGraph, use: Use) -> Optional[LayerMatch]:
    """`tf.nn.conv3d` (`Conv3D`, channels last), registered as a convolution."""
    op = use.op
    if op.type != "Conv3D" or use.index != 1:
        return None
    options = _conv_options(op, slice(1, 4))
    if options is None:
        return None
    padding, strides, dilations = options
    return _layer(
        graph,
        use,
        "convolution",
        op.inputs[0],
        op.outputs[0],
        {
            "padding": padding,
            "strides": tuple(strides),
            "dilation_rate": tuple(dilations),
        },
        "Conv3D",
    )


def match_conv1d(graph: LossGraph, use: Use) -> Optional[LayerMatch]:
    """`tf.nn.conv1d`: `Squeeze(Conv2D(ExpandDims(x), ExpandDims(filter)))`."""
    expand = use.op
    if expand.type != "ExpandDims" or use.index != 0:
        return None
    conv = graph.sole_consumer(expand.outputs[0])
    if conv is None or conv.type != "Conv2D" or conv.inputs[1] is not expand.outputs[0]:
        return None
    input_expand = conv.inputs[0].op
    squeeze = graph.sole_consumer(conv.outputs[0])
    if input_expand.type != "ExpandDims" or squeeze is None:
        return None
    if squeeze.type != "Squeeze":
        return None
    options = _conv_options(conv, slice(2, 3))  # [B, 1, W, C]: the W axis
    if options is None:
        return None
    padding, strides, dilations = options
    return _layer(
        graph,
        use,
        "convolution",
        input_expand.inputs[0],
        squeeze.outputs[0],
        {
            "padding": padding,
            "strides": tuple(strides),
            "dilation_rate": tuple(dilations),
        },
        "conv1d (ExpandDims + Conv2D + Squeeze)",
    )


def match_depthwise(graph: LossGraph, use: Use) -> Optional[LayerMatch]:
    """`tf.nn.depthwise_conv2d` (`DepthwiseConv2dNative`); its block has no bias."""
    op = use.op
    if op.type != "DepthwiseConv2dNative" or use.index != 1:
        return None
    options = _conv_options(op, slice(None))
    if options is None:
        return None
    padding, strides, dilations = options
    return _layer(
        graph,
        use,
        "depthwise_conv2d",
        op.inputs[0],
        op.outputs[0],
        {"strides": tuple(strides), "padding": padding, "rate": tuple(dilations[1:3])},
        "DepthwiseConv2dNative",
        biased=False,
    )


def _constant_value(tensor):
    try:
        return tf.get_static_value(tensor)
    except (TypeError, ValueError):
        return None


def match_embedding(graph: LossGraph, use: Use) -> Optional[LayerMatch]:
    """`tf.gather(E, ids)` on axis 0 (`GatherV2`, `ResourceGather`).

    Ids `[B, k]` followed by a sum over axis 1 are a bag of `k` ids: the
    outputs are the summed rows `[B, dim]`.
    """
    op = use.op
    if use.index != 0:
        return None
    if op.type == "GatherV2":
        axis = _constant_value(op.inputs[2])
        if axis is None or int(axis) != 0 or _attr(op, "batch_dims", 0):
            return None
    elif op.type == "ResourceGather":
        if _attr(op, "batch_dims", 0):
            return None
    else:
        return None
    ids, outputs = op.inputs[1], op.outputs[0]
    pattern = op.type
    ids_dims = _static_dims(ids)
    consumer = graph.sole_consumer(outputs)
    if ids_dims is not None and len(ids_dims) == 2 and consumer is not None:
        axes = _constant_value(consumer.inputs[1]) if consumer.type == "Sum" else None
        if axes is not None and np.array_equal(np.reshape(axes, [-1]), [1]):
            if not _attr(consumer, "keep_dims"):
                outputs = consumer.outputs[0]
                pattern += " + Sum over the ids"
    return LayerMatch(
        kind="embedding",
        params=(use.variable, None),
        inputs=ids,
        outputs=outputs,
        options=(),
        pattern=pattern,
        claims=(use,),
    )


LAYER_MATCHERS = (
    match_dense,
    match_conv2d,
    match_conv1d,
    match_conv3d,
    match_depthwise,
    match_embedding,
)
