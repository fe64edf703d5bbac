"""Depthwise and separable 2-D convolutions (channels last).

A depthwise convolution is always `DepthwiseConvDiagonalFB` ("diagonal"); a
separable one is registered as its depthwise part and a 1x1 pointwise conv2d.
"""

from kfac.ops._blocks.conv import DepthwiseConvDiagonalFB
from kfac.ops._registration.common import APPROX_DIAGONAL_NAME
from kfac.ops._registration.common import VARIABLE_SCOPE
from kfac.ops._registration.common import LayerKind
from kfac.ops._registration.common import register_layer
from kfac.ops._registration.conv2d import Conv2dLayer

DEPTHWISE_CONV2D = LayerKind(
    "depthwise_conv2d",
    {APPROX_DIAGONAL_NAME: DepthwiseConvDiagonalFB},
    default=APPROX_DIAGONAL_NAME,
    fixed=True,
)


def register_depthwise_conv2d(
    layer_collection,
    params,
    inputs,
    outputs,
    strides,
    padding,
    rate=None,
    data_format=None,
    approx=None,
    reuse=VARIABLE_SCOPE,
) -> None:
    """Registers a `tf.nn.depthwise_conv2d` layer (`DepthwiseConvDiagonalFB`).

    Args:
      params: filter `[kh, kw, in_channels, channel_multiplier]` (no bias).
      inputs: `[batch, H, W, in_channels]`.
      outputs: `[batch, H', W', in_channels * channel_multiplier]`.
      strides: 4 ints `[1, sh, sw, 1]`.
      padding: "SAME" or "VALID".
      rate: None or 2 spatial dilation ints.
      data_format: None or "NHWC".
      approx: None or "diagonal".
      reuse: see `register_block`.
    """

    def make_block(block_type, unused_approx):
        layer = Conv2dLayer(params, strides, padding, data_format, rate, depthwise=True)
        layer.check(DEPTHWISE_CONV2D.method, inputs, outputs)
        return block_type(
            layer_collection=layer_collection.factor_cache,
            params=params,
            strides=strides,
            padding=padding,
            rate=rate,
            data_format=data_format,
        )

    register_layer(
        layer_collection,
        DEPTHWISE_CONV2D,
        params,
        approx,
        reuse,
        make_block,
        (inputs, outputs),
    )


def register_separable_conv2d(
    layer_collection,
    depthwise_params,
    pointwise_params,
    inputs,
    depthwise_outputs,
    pointwise_outputs,
    strides,
    padding,
    rate=None,
    data_format=None,
    approx=None,
    reuse=VARIABLE_SCOPE,
) -> None:
    """Registers a separable conv2d as a depthwise and a 1x1 pointwise layer.

    Args:
      depthwise_params: depthwise filter `[kh, kw, in_channels, multiplier]`.
      pointwise_params: `[1, 1, in_channels * multiplier, out_channels]`, or
        `(filter, bias)`.
      inputs: `[batch, H, W, in_channels]`.
      depthwise_outputs: the intermediate depthwise output (needed).
      pointwise_outputs: pre-activations `[batch, H', W', out_channels]`.
      strides, padding, rate, data_format: those of the depthwise part.
      approx: approximation of the pointwise part (the depthwise part is
        always "diagonal").
      reuse: used for both registrations.
    """
    layer_collection.register_depthwise_conv2d(
        params=depthwise_params,
        inputs=inputs,
        outputs=depthwise_outputs,
        strides=strides,
        padding=padding,
        rate=rate,
        data_format=data_format,
        approx=APPROX_DIAGONAL_NAME,
        reuse=reuse,
    )
    layer_collection.register_conv2d(
        params=pointwise_params,
        inputs=depthwise_outputs,
        outputs=pointwise_outputs,
        strides=[1, 1, 1, 1],
        padding="VALID",
        data_format=data_format,
        approx=approx,
        reuse=reuse,
    )
