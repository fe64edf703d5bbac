"""Convolution blocks: diagonal, KFC (Grosse & Martens 2016) and depthwise variants.

A conv filter applied at `T` spatial locations has the KFC block
`F ≈ T·(Ω ⊗ Γ)`: `Ω` the second moment of the input patches (with a ones column
for the bias), `Γ` that of the output gradients, both averaged over examples and
locations (Grosse & Martens 2016, §3.1). Depthwise layers are treated as the
conv2d whose filter is zero off the depthwise structure.
"""

from typing import Optional
from typing import Sequence

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops._blocks import damping as damping_lib
from kfac.ops._blocks.diagonal import Mat2dDiagonalFB
from kfac.ops._blocks.kronecker import KroneckerProductFB
from kfac.ops._blocks.towers import InputOutputMultiTower
from kfac.ops._blocks.towers import with_position_statistics
from kfac.ops._factors import conv as conv_factors
from kfac.ops._utils import conv_patches


def maybe_tuple(obj):
    """list → tuple (hashable factor keys); anything else unchanged."""
    if isinstance(obj, list):
        return tuple(obj)
    return obj


def num_conv_locations(
    input_shape: Sequence[int], strides: Optional[Sequence[int]]
) -> int:
    """Locations a convolution is applied at: `prod(spatial in) // prod(strides)`.

    Uses the *input* spatial size, exact for SAME padding. `strides` may be the
    4 entries of `tf.nn.conv2d` (the leading/trailing 1s do not matter), the
    spatial-only strides of `tf.nn.convolution`, or None (stride 1).

    Args:
        input_shape: static input shape `[batch, *spatial, channels]`.
        strides: strides, or None.

    Returns:
        Python int.

    Raises:
        ValueError: if a spatial input dimension is unknown.
    """
    spatial = list(input_shape[1:-1])
    if any(size is None for size in spatial):
        raise ValueError(
            "num_conv_locations: the spatial input dimensions must be static, got "
            "input shape %s." % (list(input_shape),)
        )
    spatial_locations = int(np.prod(spatial, dtype=np.int64))
    strides_divisor = 1 if strides is None else int(np.prod(strides, dtype=np.int64))
    return spatial_locations // strides_divisor


def depthwise_conv2d_filter_to_conv2d_filter(filter, name=None):
    """Embeds a depthwise filter `[h, w, c, m]` into a conv2d filter `[h, w, c, c·m]`.

    Output channel `i·m + k` takes `filter[:, :, i, k]` on input channel `i` and
    zeros on every other input channel, matching `tf.nn.depthwise_conv2d`'s output
    order: `conv2d(x, result) == depthwise_conv2d(x, filter)`.

    Args:
        filter: `[h, w, c, m]` Tensor with a static shape.
        name: optional name scope.

    Returns:
        `[h, w, c, c·m]` Tensor.
    """
    with tf.name_scope(name, "depthwise_conv2d_filter_to_conv2d_filter", [filter]):
        filter = tf.convert_to_tensor(filter)
        height, width, in_channels, multiplier = filter.shape.as_list()
        # result[h, w, j, i, k] = δ_ij filter[h, w, i, k]
        selector = tf.eye(in_channels, dtype=filter.dtype)[:, :, None]
        blocks = filter[:, :, None, :, :] * selector
        return tf.reshape(
            blocks, [height, width, in_channels, in_channels * multiplier]
        )


def conv2d_filter_to_depthwise_conv2d_filter(filter, name=None):
    """Keeps the depthwise part of a conv2d filter: `[h, w, c, o]` → `[h, w, c, o/c]`.

    Entry `[:, :, i, k]` is `filter[:, :, i, i·m + k]` (`m = o/c`), the inverse of
    `depthwise_conv2d_filter_to_conv2d_filter` on its image.

    Args:
        filter: `[h, w, c, o]` Tensor with a static shape.
        name: optional name scope.

    Returns:
        `[h, w, c, o/c]` Tensor.

    Raises:
        ValueError: if `o` is not a multiple of `c`.
    """
    with tf.name_scope(name, "conv2d_filter_to_depthwise_conv2d_filter", [filter]):
        filter = tf.convert_to_tensor(filter)
        height, width, in_channels, out_channels = filter.shape.as_list()
        if out_channels % in_channels != 0:
            raise ValueError(
                "conv2d_filter_to_depthwise_conv2d_filter: out_channels (%d) must be a "
                "multiple of in_channels (%d)." % (out_channels, in_channels)
            )
        multiplier = out_channels // in_channels
        blocks = tf.reshape(
            filter, [height, width, in_channels, in_channels, multiplier]
        )
        selector = tf.eye(in_channels, dtype=filter.dtype)[:, :, None]
        return tf.reduce_sum(blocks * selector, axis=3)


def _filter_shape(params, has_bias):
    fltr = params[0] if has_bias else params
    return tuple(fltr.shape.as_list())


class ConvDiagonalFB(InputOutputMultiTower, Mat2dDiagonalFB):
    """Diagonal Fisher of a conv2d layer.

    `diag(F) = (1/B) Σ_b G_b∘G_b` with the per-example filter gradient
    `G_b = Σ_loc p̃_{b,loc} g_{b,loc}ᵀ` (patches `p̃` with a ones entry for the
    bias), normalised by the batch only. `multiply_matpower(v, exp) =
    (diag(F) + d)^exp ∘ V`, `V` the mat2d form.
    """

    def __init__(
        self,
        layer_collection,
        params,
        strides,
        padding,
        data_format=None,
        dilations=None,
    ):
        """Creates the block.

        Args:
            layer_collection: owner that builds/shares the factors.
            params: filter `[kh, kw, cin, cout]`, or `(filter, bias)`.
            strides: 4 strides, as for `tf.nn.conv2d`.
            padding: `"SAME"` or `"VALID"`.
            data_format: None or a channels-last format.
            dilations: None or 4 dilation rates.

        Raises:
            ValueError: if `strides` or `dilations` do not have 4 entries, the data
                format is not channels-last, or the filter is not 4-D.
        """
        if len(strides) != 4:
            raise ValueError(
                "ConvDiagonalFB: strides must have 4 entries, got %s."
                % (list(strides),)
            )
        if dilations is None:
            dilations = [1, 1, 1, 1]
        if len(dilations) != 4:
            raise ValueError(
                "ConvDiagonalFB: dilations must have 4 entries, got %s."
                % (list(dilations),)
            )
        if not conv_patches.is_data_format_channel_last(data_format):
            raise ValueError(
                "ConvDiagonalFB: data_format must be channels-last, got "
                "%r." % (data_format,)
            )
        self._strides = maybe_tuple(strides)
        self._padding = padding
        self._data_format = data_format
        self._dilations = maybe_tuple(dilations)
        self._has_bias = isinstance(params, (tuple, list))
        self._filter_shape = _filter_shape(params, self._has_bias)
        if len(self._filter_shape) != 4:
            raise ValueError(
                "ConvDiagonalFB: the filter must be 4-D [filter_height, filter_width, "
                "in_channels, out_channels], got shape %s." % (self._filter_shape,)
            )
        super(ConvDiagonalFB, self).__init__(layer_collection)

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        self._num_locations = num_conv_locations(
            inputs[0].shape.as_list(), self._strides
        )
        self._factor = self._factors.make_or_get_factor(
            conv_factors.ConvDiagonalFactor,
            (
                inputs,
                grads_list,
                self._filter_shape,
                self._strides,
                self._padding,
                self._data_format,
                self._dilations,
                self._has_bias,
            ),
        )
        num_locations = self._num_locations

        def damping_func():
            # = damping when NORMALIZE_DAMPING_POWER is 1: the diagonal is not
            # normalised by the locations.
            return num_locations * damping_lib.normalize_damping(
                damping, num_locations, self._config.normalize_damping_power
            )

        damping_id = (
            num_locations,
            "mult",
            "normalize_damping",
            damping,
            num_locations,
        )
        self._damping_func = damping_lib.PackagedFunc(damping_func, damping_id)


class ConvKFCMixin(object):
    """Configuration and factors shared by the conv Kronecker blocks.

    `_reduce` (KFAC-reduce, Eschenhagen et al. 2023) averages each example's
    patches and sums its output gradients over the locations before the
    outer products; otherwise every location is a row (KFC, i.e. KFAC-expand).
    """

    _reduce = False

    def __init__(
        self,
        layer_collection,
        params,
        padding,
        strides=None,
        dilation_rate=None,
        data_format=None,
        extract_patches_fn=None,
        *args,
        sub_sample_inputs=None,
        sub_sample_patches=None,
        **kwargs,
    ):
        """Creates the block.

        Args:
            layer_collection: owner that builds/shares the factors.
            params: filter `[*spatial, cin, cout]`, or `(filter, bias)`.
            padding: `"SAME"` or `"VALID"`.
            strides: spatial-only strides (`tf.nn.convolution`), 4 strides with
                `extract_patches_fn="extract_image_patches"`, or None.
            dilation_rate: dilations in the same convention as `strides`, or None.
            data_format: None or a channels-last format.
            extract_patches_fn: None, `"extract_convolution_patches"`,
                `"extract_image_patches"` or `"extract_pointwise_conv2d_patches"`.
            *args, **kwargs: for the next class in the block's bases (e.g.
                `num_uses`).
            sub_sample_inputs, sub_sample_patches: (port additions, keywords
                only) estimate the input factor from a random part of the
                examples / patches (`ConvInputKroneckerFactor`; None: the
                collection's `KfacConfig`).
        """
        self._set_conv_config(
            params, padding, strides, dilation_rate, data_format, extract_patches_fn
        )
        self._sub_sample = (sub_sample_inputs, sub_sample_patches)
        super(ConvKFCMixin, self).__init__(
            *args, layer_collection=layer_collection, **kwargs
        )

    def _set_conv_config(
        self, params, padding, strides, dilation_rate, data_format, extract_patches_fn
    ):
        self._padding = padding
        self._strides = maybe_tuple(strides)
        self._dilation_rate = maybe_tuple(dilation_rate)
        self._data_format = data_format
        self._extract_patches_fn = extract_patches_fn
        # A 1-element list counts as "has bias", as in the original.
        self._has_bias = isinstance(params, (tuple, list))
        self._filter_shape = _filter_shape(params, self._has_bias)

    def _make_conv_factors(self, inputs, grads_list):
        """Sets `_num_locations`, `_input_factor` (Ω) and `_output_factor` (Γ).

        The sampling switches are resolved against the configuration first,
        so that blocks asking for the same statistics share one factor.
        """
        defaults = (self._config.sub_sample_inputs, self._config.sub_sample_patches)
        sub_sample = tuple(
            bool(default if value is None else value)
            for value, default in zip(self._sub_sample, defaults)
        )
        self._num_locations = num_conv_locations(
            inputs[0].shape.as_list(), self._strides
        )
        reduce = self._reduce
        input_statistics = self._position_statistics("inputs", "examples_first", reduce)
        output_statistics = self._position_statistics(
            "outputs", "examples_first", reduce
        )
        if input_statistics is not None:
            # Sampling rows would break the weights' alignment: only the
            # configuration's default may ask for it, and is then ignored.
            if any(self._sub_sample):
                raise ValueError(
                    "%s: sub_sample_inputs / sub_sample_patches cannot be "
                    "combined with weights, a mask or KFAC-reduce."
                    % type(self).__name__
                )
            sub_sample = (False, False)
        self._input_factor = self._factors.make_or_get_factor(
            conv_factors.ConvInputKroneckerFactor,
            with_position_statistics(
                (
                    inputs,
                    self._filter_shape,
                    self._padding,
                    self._strides,
                    self._dilation_rate,
                    self._data_format,
                    self._extract_patches_fn,
                    self._has_bias,
                )
                + sub_sample,
                input_statistics,
            ),
        )
        self._output_factor = self._factors.make_or_get_factor(
            conv_factors.ConvOutputKroneckerFactor,
            with_position_statistics((grads_list,), output_statistics, (None,)),
        )


class ConvKFCBasicFB(InputOutputMultiTower, ConvKFCMixin, KroneckerProductFB):
    """KFC block of a convolution (Grosse & Martens 2016): `F ≈ T·(Ω ⊗ Γ)`.

    `T = num_conv_locations(input shape, strides)`; the damping is normalised by
    `T` before the pi split, so the damped block is `≈ T(Ω ⊗ Γ) + damping·I`.
    """

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        self._make_conv_factors(inputs, grads_list)
        self._setup_damping(damping, normalization=self._num_locations)

    @property
    def _renorm_coeff(self):
        return self._num_locations


class ConvKFCReduceFB(ConvKFCBasicFB):
    """KFAC-reduce block of a convolution (`ConvKFCBasicFB`'s arguments):
    `p̄_b = mean_loc p̃_{b,loc}`, `ĝ_b = Σ_loc ds_{b,loc}`,
    `F ≈ E_b[p̄ p̄ᵀ] ⊗ E_b[ĝ ĝᵀ]` (no location factor, no damping
    normalisation); outer products over `B` rows instead of `B·T`."""

    _reduce = True

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        self._make_conv_factors(inputs, grads_list)
        self._setup_damping(damping)

    @property
    def _renorm_coeff(self):
        return 1.0


def _check_depthwise_args(block_name, params, strides, rate, data_format):
    """Validates the depthwise constructors' arguments; returns 4-entry dilations."""
    if isinstance(params, (tuple, list)):
        raise NotImplementedError(
            "%s: a bias is not supported for depthwise convolutions; pass the filter "
            "alone." % block_name
        )
    if params.shape.ndims != 4:
        raise ValueError(
            "%s: the filter must be 4-D [filter_height, filter_width, in_channels, "
            "channel_multiplier], got shape %s." % (block_name, params.shape)
        )
    if len(strides) != 4:
        raise ValueError(
            "%s: strides must have 4 entries, got %s." % (block_name, list(strides))
        )
    if rate is not None and len(rate) != 2:
        raise ValueError(
            "%s: rate must have 2 entries, got %s." % (block_name, list(rate))
        )
    if not conv_patches.is_data_format_channel_last(data_format):
        raise ValueError(
            "%s: data_format must be channels-last, got %r." % (block_name, data_format)
        )
    if rate is None:
        return None
    return [1] + list(rate) + [1]


def _conv2d_filter_shape(params):
    """`(kh, kw, cin, cin·m)`: the conv2d filter a depthwise filter embeds into."""
    height, width, in_channels, multiplier = params.shape.as_list()
    return (height, width, in_channels, in_channels * multiplier)


class DepthwiseConvDiagonalFB(ConvDiagonalFB):
    """Diagonal Fisher of a depthwise conv2d, via the equivalent conv2d filter.

    The diagonal of the conv2d block at the depthwise entries is the depthwise
    diagonal, so products convert the vector to the conv2d layout, multiply, and
    keep the depthwise part.
    """

    def __init__(
        self, layer_collection, params, strides, padding, rate=None, data_format=None
    ):
        """Creates the block.

        Args:
            layer_collection: owner that builds/shares the factors.
            params: depthwise filter `[kh, kw, cin, m]` (no bias).
            strides: 4 strides.
            padding: `"SAME"` or `"VALID"`.
            rate: None or 2 spatial dilation rates.
            data_format: None or a channels-last format.

        Raises:
            NotImplementedError: if `params` is a tuple/list (bias).
            ValueError: for a non-4-D filter, `strides` without 4 entries, `rate`
                without 2 entries, or a channels-first data format.
        """
        dilations = _check_depthwise_args(
            "DepthwiseConvDiagonalFB", params, strides, rate, data_format
        )
        super(DepthwiseConvDiagonalFB, self).__init__(
            layer_collection=layer_collection,
            params=params,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilations=dilations,
        )
        self._filter_shape = _conv2d_filter_shape(params)

    def multiply_matpower(self, vector, exp):
        conv2d_vector = depthwise_conv2d_filter_to_conv2d_filter(vector)
        conv2d_result = super(DepthwiseConvDiagonalFB, self).multiply_matpower(
            conv2d_vector, exp
        )
        return conv2d_filter_to_depthwise_conv2d_filter(conv2d_result)


class DepthwiseConvKFCBasicFB(ConvKFCBasicFB):
    """KFC block of a depthwise conv2d, via the equivalent conv2d filter.

    The layer is treated as a conv2d with filter `[kh, kw, cin, cin·m]` that is
    zero off the depthwise structure; products embed the vector, apply the conv2d
    KFC product and keep the depthwise part.
    """

    def __init__(
        self, layer_collection, params, strides, padding, rate=None, data_format=None
    ):
        """Creates the block (arguments and errors as `DepthwiseConvDiagonalFB`)."""
        dilations = _check_depthwise_args(
            "DepthwiseConvKFCBasicFB", params, strides, rate, data_format
        )
        super(DepthwiseConvKFCBasicFB, self).__init__(
            layer_collection=layer_collection,
            params=params,
            padding=padding,
            strides=strides,
            dilation_rate=dilations,
            data_format=data_format,
            extract_patches_fn="extract_image_patches",
        )
        self._filter_shape = _conv2d_filter_shape(params)

    def multiply_matpower(self, vector, exp):
        conv2d_vector = depthwise_conv2d_filter_to_conv2d_filter(vector)
        conv2d_result = super(DepthwiseConvKFCBasicFB, self).multiply_matpower(
            conv2d_vector, exp
        )
        return conv2d_filter_to_depthwise_conv2d_filter(conv2d_result)
