"""2-D convolutions (`tf.nn.conv2d`, channels last), used once or several times.

Approximations: "kron" (`ConvKFCBasicFB`, default; KFAC-expand, also named
"kron_expand"), "kron_reduce" (`ConvKFCReduceFB`: KFAC-reduce, each example's
locations aggregated, Eschenhagen et al. 2023), "diagonal" (`ConvDiagonalFB`)
or "ekfac" (`ConvEKFACFB`, George et al. 2018); used several times per
example, only "kron_indep" (`ConvKFCBasicMultiIndepFB`). `strides` and
`dilations` have the 4 entries of `tf.nn.conv2d`. A `mask`/`weights` of the
output locations (or of the examples) weights the Kronecker statistics.
"""

import dataclasses
from typing import Any

from kfac.ops._blocks.conv import ConvDiagonalFB
from kfac.ops._blocks.conv import ConvKFCBasicFB
from kfac.ops._blocks.conv import ConvKFCReduceFB
from kfac.ops._blocks.eigenbasis import ConvEKFACFB
from kfac.ops._blocks.multi_use import ConvKFCBasicMultiIndepFB
from kfac.ops._registration.common import APPROX_DIAGONAL_NAME
from kfac.ops._registration.common import APPROX_EKFAC_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_EXPAND_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_INDEP_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_REDUCE_NAME
from kfac.ops._registration.common import VARIABLE_SCOPE
from kfac.ops._registration.common import LayerKind
from kfac.ops._registration.common import check_weights_supported
from kfac.ops._registration.common import register_layer
from kfac.ops._registration.common import tower_arguments
from kfac.ops._registration.convolution import check_convolution_io
from kfac.ops._registration.convolution import check_data_format
from kfac.ops._registration.convolution import check_full_strides
from kfac.ops._registration.convolution import check_padding
from kfac.ops._registration.convolution import check_spatial_list
from kfac.ops._registration.convolution import sub_sample_options
from kfac.ops._registration.multi_use import register_multi_use_layer
from kfac.ops._registration.shapes import error
from kfac.ops._registration.weights import combine_mask_and_weights

CONV2D = LayerKind(
    "conv2d",
    {
        APPROX_KRONECKER_NAME: ConvKFCBasicFB,
        APPROX_DIAGONAL_NAME: ConvDiagonalFB,
        APPROX_EKFAC_NAME: ConvEKFACFB,
        APPROX_KRONECKER_EXPAND_NAME: ConvKFCBasicFB,
        APPROX_KRONECKER_REDUCE_NAME: ConvKFCReduceFB,
    },
    default=APPROX_KRONECKER_NAME,
)
# Approximations whose statistics take location weights or a mask.
CONV2D_WEIGHTED = (
    APPROX_KRONECKER_NAME,
    APPROX_KRONECKER_EXPAND_NAME,
    APPROX_KRONECKER_REDUCE_NAME,
)

CONV2D_MULTI = LayerKind(
    "conv2d_multi",
    {APPROX_KRONECKER_INDEP_NAME: ConvKFCBasicMultiIndepFB},
    default=APPROX_KRONECKER_INDEP_NAME,
)


@dataclasses.dataclass(frozen=True, eq=False)
class Conv2dLayer:
    """The configuration of a channels-last 2-D convolution, as registered.

    `strides` has 4 entries `[1, sh, sw, 1]`; `dilations` is None or 4 entries
    as well, except for a depthwise convolution, whose `rate` has the 2
    spatial entries.
    """

    params: Any
    strides: Any
    padding: Any
    data_format: Any = None
    dilations: Any = None
    depthwise: bool = False

    def check(self, method, inputs, outputs, names=("inputs", "outputs")) -> None:
        """Checks the configuration, then `inputs`/`outputs` against the filter.

        The data format is checked first: the other checks assume channels
        last.
        """
        check_data_format(method, self.data_format, 2)
        check_full_strides(method, "strides", self.strides, allow_none=False)
        if self.depthwise:
            check_spatial_list(method, "rate", self.dilations, 2)
            spatial_dilations = self.dilations
        else:
            check_full_strides(method, "dilations", self.dilations, allow_none=True)
            spatial_dilations = None if self.dilations is None else self.dilations[1:3]
        check_padding(method, self.padding)
        check_convolution_io(
            method,
            self.params,
            inputs,
            outputs,
            self.padding,
            self.strides[1:3],
            spatial_dilations,
            spatial_rank=2,
            depthwise=self.depthwise,
            names=names,
        )

    def block(self, factor_cache, block_type, approx, **options):
        """A block of `block_type` for this convolution.

        The diagonal block takes `dilations`; the Kronecker ones take them as
        `dilation_rate` and extract patches with `tf.extract_image_patches`, as
        in the original, and `options` (`num_uses`, the sampling switches).
        """
        common = dict(
            layer_collection=factor_cache,
            params=self.params,
            padding=self.padding,
            strides=self.strides,
            data_format=self.data_format,
        )
        if approx == APPROX_DIAGONAL_NAME:
            return block_type(dilations=self.dilations, **common)
        return block_type(
            dilation_rate=self.dilations,
            extract_patches_fn="extract_image_patches",
            **common,
            **options,
        )


def register_conv2d(
    layer_collection,
    params,
    strides,
    padding,
    inputs,
    outputs,
    data_format=None,
    dilations=None,
    approx=None,
    reuse=VARIABLE_SCOPE,
    sub_sample_inputs=None,
    sub_sample_patches=None,
    mask=None,
    weights=None,
) -> None:
    """Registers a `tf.nn.conv2d` layer (channels last).

    Args:
      params: filter `[kh, kw, in_channels, out_channels]`, or `(filter, bias)`.
      strides: 4 ints `[1, sh, sw, 1]`.
      padding: "SAME" or "VALID".
      inputs: `[batch, H, W, in_channels]`.
      outputs: pre-activations `[batch, H', W', out_channels]`.
      data_format: None or "NHWC".
      dilations: None or 4 ints `[1, dh, dw, 1]`.
      approx: "kron" (`ConvKFCBasicFB`, default; also "kron_expand"),
        "kron_reduce" (`ConvKFCReduceFB`), "diagonal" (`ConvDiagonalFB`) or
        "ekfac" (`ConvEKFACFB`).
      reuse: see `register_block`.
      sub_sample_inputs, sub_sample_patches: (port additions) estimate the
        Kronecker input factor from a random part of the examples / of the
        patches (`ConvInputKroneckerFactor`); None: the collection's
        `KfacConfig`. True with "diagonal" raises ValueError.
      mask, weights: (port additions) bool/0-1 values or non-negative weights
        of the output locations `[batch, H', W']` or of the examples
        `[batch]` (a prefix broadcasts); see `register_fully_connected`.
        Not with sampling.
    """
    method = CONV2D.method
    layer = Conv2dLayer(params, strides, padding, data_format, dilations)
    position_weights = combine_mask_and_weights(
        method, mask, weights, outputs, "outputs"
    )

    def make_block(block_type, approx):
        layer.check(method, inputs, outputs)
        options = sub_sample_options(
            method, approx, sub_sample_inputs, sub_sample_patches
        )
        check_weights_supported(CONV2D, approx, position_weights, CONV2D_WEIGHTED)
        sampled = sub_sample_inputs or sub_sample_patches
        if sampled and (
            position_weights is not None or approx == APPROX_KRONECKER_REDUCE_NAME
        ):
            raise error(
                method,
                "sub_sample_inputs/sub_sample_patches cannot be combined with a "
                "mask, weights or approx={!r}.".format(approx),
            )
        if approx == APPROX_DIAGONAL_NAME:
            options = {}
        return layer.block(layer_collection.factor_cache, block_type, approx, **options)

    register_layer(
        layer_collection,
        CONV2D,
        params,
        approx,
        reuse,
        make_block,
        tower_arguments(inputs, outputs, position_weights),
    )


def register_conv2d_multi(
    layer_collection,
    params,
    strides,
    padding,
    inputs,
    outputs,
    num_uses=None,
    data_format=None,
    dilations=None,
    approx=None,
    reuse=VARIABLE_SCOPE,
) -> None:
    """Registers a conv2d layer applied several times (`ConvKFCBasicMultiIndepFB`).

    Args are those of `register_conv2d`, with `inputs`/`outputs` lists over
    uses or single folded tensors, and `num_uses` as in
    `register_fully_connected_multi`; `approx` may only be "kron_indep".
    """
    layer = Conv2dLayer(params, strides, padding, data_format, dilations)
    register_multi_use_layer(
        layer_collection,
        CONV2D_MULTI,
        params,
        inputs,
        outputs,
        num_uses,
        approx,
        reuse,
        check_use=lambda method, unused_params, x, y, names: layer.check(
            method, x, y, names
        ),
        make_block=lambda block_type: layer.block(
            layer_collection.factor_cache,
            block_type,
            APPROX_KRONECKER_INDEP_NAME,
            num_uses=num_uses,
        ),
    )
