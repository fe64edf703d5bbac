"""Depthwise and separable 2-D convolutions (channels last).

A depthwise convolution is always `DepthwiseConvDiagonalFB` ("diagonal"); a
separable one is registered as its depthwise part and a 1x1 pointwise conv2d.
"""

from kfac.ops._blocks.conv import DepthwiseConvDiagonalFB
from kfac.ops._registration.common import APPROX_DIAGONAL_NAME
from kfac.ops._registration.common import LayerKind
from kfac.ops._registration.common import register_layer
from kfac.ops._registration.conv2d import check_conv2d_arguments

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
    rate,
    data_format,
    approx,
    reuse,
):
    """`LayerCollection.register_depthwise_conv2d`: one tower, one use.

    `rate` holds the 2 spatial dilations.
    """

    def make_block(block_type, unused_approx):
        check_conv2d_arguments(
            DEPTHWISE_CONV2D.method,
            params,
            strides,
            padding,
            inputs,
            outputs,
            data_format,
            rate,
            depthwise=True,
        )
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
    rate,
    data_format,
    approx,
    reuse,
):
    """`LayerCollection.register_separable_conv2d`: two registrations, same `reuse`.

    The depthwise part takes `strides`, `padding`, `rate` and `data_format`;
    the pointwise part reads `depthwise_outputs` with strides 1, "VALID"
    padding and the caller's `approx`. Both go through the collection's public
    methods, so a subclass overriding them sees both parts.
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
