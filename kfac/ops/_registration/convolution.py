"""N-D convolutions (`tf.nn.convolution`) and the checks of every convolution.

Always `ConvKFCBasicFB` ("kron"), given the spatial-only `strides` and
`dilation_rate` and the default patch extractor. The checks here compare a
filter `[*kernel, in_channels, out_channels]`, its bias, inputs
`[batch, *spatial, in_channels]` and outputs `[batch, *spatial_out,
out_channels]`; conv2d and depthwise registrations use them too.
"""

import numbers

import numpy as np

from kfac.ops._blocks.conv import ConvKFCBasicFB
from kfac.ops._registration.common import APPROX_DIAGONAL_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_NAME
from kfac.ops._registration.common import VARIABLE_SCOPE
from kfac.ops._registration.common import LayerKind
from kfac.ops._registration.common import register_layer
from kfac.ops._registration.shapes import check_bias
from kfac.ops._registration.shapes import check_dim
from kfac.ops._registration.shapes import check_layer_dtype
from kfac.ops._registration.shapes import check_rank
from kfac.ops._registration.shapes import check_same_batch
from kfac.ops._registration.shapes import describe
from kfac.ops._registration.shapes import dims
from kfac.ops._registration.shapes import error
from kfac.ops._registration.shapes import split_params
from kfac.ops._registration.shapes import static_shape

CONVOLUTION = LayerKind(
    "convolution",
    {APPROX_KRONECKER_NAME: ConvKFCBasicFB},
    default=APPROX_KRONECKER_NAME,
    fixed=True,
)

_PADDINGS = ("SAME", "VALID")
_CHANNELS_LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


def check_padding(method: str, padding) -> None:
    if padding not in _PADDINGS:
        raise error(
            method,
            "`padding` must be one of {}; got {!r}.".format(list(_PADDINGS), padding),
        )


def check_data_format(method: str, data_format, spatial_rank) -> None:
    """Only channels-last layouts (or None) are supported by the conv factors.

    With `spatial_rank` None any "N...C" layout string is accepted.
    """
    expected = _CHANNELS_LAST.get(spatial_rank, "N...C")
    if spatial_rank is None and isinstance(data_format, str):
        if data_format.startswith("N") and data_format.endswith("C"):
            return
    if data_format is not None and data_format != expected:
        raise error(
            method,
            "`data_format` must be None or {!r} (channels last); got {!r}.".format(
                expected, data_format
            ),
        )


def _is_int_list(values) -> bool:
    return isinstance(values, (tuple, list)) and all(
        isinstance(v, (numbers.Integral, np.integer)) and v > 0 for v in values
    )


def check_full_strides(method: str, argument: str, values, allow_none: bool) -> None:
    """Checks 4-entry strides/dilations `[1, s_h, s_w, 1]` as for `tf.nn.conv2d`."""
    if values is None and allow_none:
        return
    if not (_is_int_list(values) and len(values) == 4 and values[0] == values[3] == 1):
        raise error(
            method,
            "`{}` must be a list of 4 positive ints [1, h, w, 1]; got {!r}.".format(
                argument, values
            ),
        )


def check_spatial_list(method: str, argument: str, values, spatial_rank: int) -> None:
    """Checks None or `spatial_rank` positive ints (as for `tf.nn.convolution`)."""
    if values is None:
        return
    if not (_is_int_list(values) and len(values) == spatial_rank):
        raise error(
            method,
            "`{}` must be None or a list of {} positive ints (spatial dimensions "
            "only); got {!r}.".format(argument, spatial_rank, values),
        )


def conv_spatial_rank(method: str, params, inputs):
    """Spatial dimensions from the filter (or inputs) rank; None if unknown."""
    weights, _ = split_params(method, params)
    for argument, value in (("params", weights), ("inputs", inputs)):
        shape = static_shape(value)
        if shape.rank is not None:
            if shape.rank < 3:
                raise error(
                    method,
                    "`{}` must have rank >= 3 for a convolution; got shape {}.".format(
                        argument, describe(shape)
                    ),
                )
            return shape.rank - 2
    return None


def _expected_output_size(in_size, kernel, stride, dilation, padding):
    if None in (in_size, kernel):
        return None
    if padding == "SAME":
        return -(-in_size // stride)
    return -(-(in_size - (kernel - 1) * dilation) // stride)


def check_convolution_io(
    method,
    params,
    inputs,
    outputs,
    padding,
    spatial_strides=None,
    spatial_dilations=None,
    spatial_rank=None,
    depthwise=False,
    names=("inputs", "outputs"),
) -> None:
    """Checks a channels-last convolution's filter, bias, inputs and outputs.

    Filter `[*kernel, cin, cout]` (depthwise: `[kh, kw, cin, m]` with `cout =
    cin·m`), bias `[cout]`, inputs `[B, *spatial, cin]`, outputs
    `[B, *spatial_out, cout]` with the spatial output size implied by the
    padding, strides and dilations. `inputs` or `outputs` may be None.
    `spatial_rank` None means: infer it from the filter or inputs rank.
    """
    check_layer_dtype(method, params, inputs, outputs, names)
    weights, bias = split_params(method, params)
    if spatial_rank is None:
        spatial_rank = conv_spatial_rank(method, params, inputs)
        if spatial_rank is None:
            return
    rank = spatial_rank + 2
    argument = "params[0]" if isinstance(params, (tuple, list)) else "params"
    layout = (
        "[kh, kw, in_channels, channel_multiplier]"
        if depthwise
        else ("[*kernel_size, in_channels, out_channels]")
    )
    filter_shape = check_rank(method, argument, weights, rank, layout)
    filter_dims = dims(filter_shape, rank)
    kernel, in_channels = filter_dims[:spatial_rank], filter_dims[-2]
    out_channels = filter_dims[-1]
    if depthwise:
        out_channels = (
            None if None in filter_dims[-2:] else in_channels * filter_dims[-1]
        )
    check_bias(method, bias, out_channels, filter_shape)
    reason = "for a filter of shape {}".format(describe(filter_shape))
    strides = spatial_strides or [1] * spatial_rank
    dilations = spatial_dilations or [1] * spatial_rank
    input_dims = None
    checked = []
    if inputs is not None:
        shape = check_rank(
            method, names[0], inputs, rank, "[batch, *spatial, in_channels]"
        )
        check_dim(
            method,
            names[0],
            shape,
            -1,
            in_channels,
            "[batch, ..., {}]".format(in_channels),
            reason,
        )
        input_dims = dims(shape, rank)
        checked.append((names[0], shape))
    if outputs is not None:
        shape = check_rank(
            method, names[1], outputs, rank, "[batch, *spatial, out_channels]"
        )
        expected = [None] * rank
        expected[-1] = out_channels
        if input_dims is not None:
            expected[1:-1] = [
                _expected_output_size(size, k, s, d, padding)
                for size, k, s, d in zip(input_dims[1:-1], kernel, strides, dilations)
            ]
        for axis in range(1, rank):
            check_dim(
                method,
                names[1],
                shape,
                axis,
                expected[axis],
                "[batch, {}]".format(
                    ", ".join("?" if d is None else str(d) for d in expected[1:])
                ),
                "{} and {} of shape {} ({} padding)".format(
                    reason, names[0], describe(static_shape(inputs)), padding
                ),
                # The channels must agree; a spatial size that does not follow
                # from the inputs is what the original accepted (its tests
                # register such shapes), so only a warning.
                strict=axis == rank - 1,
            )
        checked.append((names[1], shape))
    if len(checked) == 2:
        check_same_batch(method, *checked)


def sub_sample_options(method, approx, sub_sample_inputs, sub_sample_patches):
    """The sampling keywords for a Kronecker conv block, checked.

    Raises:
      ValueError: a switch that is neither None nor a bool, or a switch turned
        on for an approximation without the Kronecker input factor.
    """
    options = dict(sub_sample_inputs=sub_sample_inputs,
                   sub_sample_patches=sub_sample_patches)
    for name, value in options.items():
        if value is not None and not isinstance(value, bool):
            raise ValueError("%s: %s must be None or a bool, got %r."
                             % (method, name, value))
        if value and approx == APPROX_DIAGONAL_NAME:
            raise ValueError(
                "%s: %s=True needs a Kronecker approximation (it samples the "
                "input factor's patches); approx is %r." % (method, name, approx))
    return options


def register_convolution(
    layer_collection,
    params,
    inputs,
    outputs,
    padding,
    strides=None,
    dilation_rate=None,
    data_format=None,
    approx=None,
    reuse=VARIABLE_SCOPE,
    sub_sample_inputs=None,
    sub_sample_patches=None,
) -> None:
    """Registers an N-D `tf.nn.convolution` layer (always `ConvKFCBasicFB`).

    Args:
      params: filter `[*kernel, in_channels, out_channels]`, or `(filter, bias)`.
      inputs: `[batch, *spatial, in_channels]`.
      outputs: pre-activations `[batch, *spatial_out, out_channels]`.
      padding: "SAME" or "VALID".
      strides, dilation_rate: None or one int per **spatial** dimension.
      data_format: None or the channels-last format ("NWC", "NHWC", "NDHWC").
      approx: None or "kron".
      reuse: see `register_block`.
      sub_sample_inputs, sub_sample_patches: (port additions) estimate the
        input factor from a random part of the examples / of the patches
        (`ConvInputKroneckerFactor`); None: the collection's `KfacConfig`.
    """
    method = CONVOLUTION.method
    sub_sample = sub_sample_options(
        method, approx, sub_sample_inputs, sub_sample_patches)

    def make_block(block_type, unused_approx):
        spatial_rank = conv_spatial_rank(method, params, inputs)
        check_padding(method, padding)
        check_data_format(method, data_format, spatial_rank)
        if spatial_rank is not None:
            check_spatial_list(method, "strides", strides, spatial_rank)
            check_spatial_list(method, "dilation_rate", dilation_rate, spatial_rank)
        check_convolution_io(
            method,
            params,
            inputs,
            outputs,
            padding,
            strides,
            dilation_rate,
            spatial_rank,
        )
        return block_type(
            layer_collection=layer_collection.factor_cache,
            params=params,
            padding=padding,
            strides=strides,
            dilation_rate=dilation_rate,
            data_format=data_format,
            **sub_sample,
        )

    register_layer(
        layer_collection,
        CONVOLUTION,
        params,
        approx,
        reuse,
        make_block,
        (inputs, outputs),
    )
