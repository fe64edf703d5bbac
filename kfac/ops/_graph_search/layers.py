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


def _convolution(graph, use, conv, inputs, outputs, kind, pattern, layout):
    """The match of a convolution op `conv`, or None for padding "EXPLICIT" or
    channels first.

    `layout` = `(strides slice, strides name, dilations slice, dilations
    name)`: which entries of the op's `strides`/`dilations` attributes the
    registration takes, under which keyword. Depthwise blocks take no bias.
    """
    padding = _text(_attr(conv, "padding"))
    if padding not in ("SAME", "VALID"):
        return None
    if not _text(_attr(conv, "data_format", b"NHWC")).endswith("C"):
        return None
    strides_slice, strides_name, dilations_slice, dilations_name = layout
    options = {
        "padding": padding,
        strides_name: tuple(list(_attr(conv, "strides"))[strides_slice]),
        dilations_name: tuple(list(_attr(conv, "dilations", [1] * 5))[dilations_slice]),
    }
    biased = kind != "depthwise_conv2d"
    return _layer(graph, use, kind, inputs, outputs, options, pattern, biased=biased)


_ALL = slice(None)
_CONV2D = (_ALL, "strides", _ALL, "dilations")
_DEPTHWISE = (_ALL, "strides", slice(1, 3), "rate")
_CONV3D = (slice(1, 4), "strides", slice(1, 4), "dilation_rate")
_CONV1D = (slice(2, 3), "strides", slice(2, 3), "dilation_rate")  # [B, 1, W, C]


# op type -> (registration kind, layout) of the convolutions that read the
# filter directly (channels last).
_CONVOLUTION_OPS = {
    "Conv2D": ("conv2d", _CONV2D),
    "Conv3D": ("convolution", _CONV3D),
    "DepthwiseConv2dNative": ("depthwise_conv2d", _DEPTHWISE),
}


def match_convolution(graph: LossGraph, use: Use) -> Optional[LayerMatch]:
    """`tf.nn.conv2d`, `tf.nn.conv3d` (a "convolution" registration) and
    `tf.nn.depthwise_conv2d` (no bias: its block has none)."""
    op = use.op
    if op.type not in _CONVOLUTION_OPS or use.index != 1:
        return None
    kind, layout = _CONVOLUTION_OPS[op.type]
    return _convolution(
        graph, use, op, op.inputs[0], op.outputs[0], kind, op.type, layout
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
    pattern = "conv1d (ExpandDims + Conv2D + Squeeze)"
    inputs, outputs = input_expand.inputs[0], squeeze.outputs[0]
    return _convolution(
        graph, use, conv, inputs, outputs, "convolution", pattern, _CONV1D
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


LAYER_MATCHERS = (match_dense, match_convolution, match_conv1d, match_embedding)
