"""Factors of convolutional layers (Grosse & Martens 2016, "KFC").

Notation: a patch `p̃` is the input window one output location sees, flattened
in filter order `(spatial filter…, cin)` (matching `reshape(W, [-1, cout])`),
with a trailing 1 when the layer has a bias; `ds` is the pre-activation
gradient at one output location. `B` = batch, `T` = output locations.

* `ConvDiagonalFactor`: diagonal Fisher, mean over examples of the squared
  per-example weight gradient `Σ_loc p̃ dsᵀ`;
* `ConvInputKroneckerFactor`: `Ω̂ = (1/(B·T)) Σ_{b,loc} p̃ p̃ᵀ` (KFC eq. 14);
* `ConvOutputKroneckerFactor`: `Γ̂ = (1/(B·T)) Σ_{b,loc} ds dsᵀ`.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops._factors import diagonal
from kfac.ops._factors import inverse_providing
from kfac.ops._factors import layer_data
from kfac.ops._factors import naming
from kfac.ops._factors import positions
from kfac.ops._factors import sampling
from kfac.ops._factors import second_moments
from kfac.ops._factors import statistics
from kfac.ops._utils import conv_patches

_PATCH_FNS = (
    None,
    "extract_convolution_patches",
    "extract_image_patches",
    "extract_pointwise_conv2d_patches",
)


def _int_tuple(values):
    """A list/tuple of ints (numpy ints and Dimensions included) → tuple of ints."""
    if values is None:
        return None
    return tuple(naming.to_python_scalar(value) for value in values)


def _extract_image_patches(inputs, filter_shape, strides, rates, padding):
    """2-D patches `[B, H', W', kh·kw·cin]`, the values of the op
    `tf.extract_image_patches` (4-entry `strides` and `rates`), computed by
    `conv_patches.extract_convolution_patches`, which is 1.7-7x faster on a
    CPU (see its `IDENTITY_FILTER_MAX_CHANNELS`)."""
    patches = conv_patches.extract_convolution_patches(
        inputs, filter_shape, padding, strides=list(strides[1:3]),
        dilation_rate=list(rates[1:3]),
    )
    dynamic = tf.shape(patches)
    leading = [size if size is not None else dynamic[axis]
               for axis, size in enumerate(patches.shape.as_list()[:3])]
    return tf.reshape(patches, leading + [int(np.prod(filter_shape[:3]))])


class ConvDiagonalFactor(layer_data.InputsAndGradients, diagonal.DiagonalFactor):
    """Diagonal Fisher of a 2-D convolution, shape `[kh·kw·cin + has_bias, cout]`.

    With per-example weight gradient `G_b = Σ_loc p̃_{b,loc} ds_{b,loc}ᵀ`:
    `Ĉ = (1/B) Σ_b G_b ∘ G_b` (normalised by the batch, not the locations).

    Args:
      inputs: per tower, the layer inputs `[B, H, W, cin]`.
      outputs_grads: per source, per tower, the gradients `[B, H', W', cout]`.
      filter_shape: `(kh, kw, cin, cout)`.
      strides: 4 entries, as for `tf.nn.conv2d`.
      padding: `"SAME"` or `"VALID"`.
      data_format: None or a channels-last format.
      dilations: None or 4 entries.
      has_bias: whether the layer has a bias.

    Raises:
      ValueError: channels not last; inputs or gradients not 4-D or with
        channels disagreeing with `filter_shape`; `strides` / `dilations` not
        of length 4.
    """

    def __init__(
        self,
        inputs,
        outputs_grads,
        filter_shape,
        strides,
        padding,
        data_format=None,
        dilations=None,
        has_bias=False,
    ):
        filter_shape = _int_tuple(filter_shape)
        if not conv_patches.is_data_format_channel_last(data_format):
            raise ValueError(
                "ConvDiagonalFactor: data_format must be channels-last, got %r."
                % (data_format,)
            )
        if len(filter_shape) != 4:
            raise ValueError(
                "ConvDiagonalFactor: filter_shape must have 4 entries "
                "(kh, kw, cin, cout), got %s." % (filter_shape,)
            )
        for input_ in inputs:
            if input_.shape.ndims != 4:
                raise ValueError(
                    "ConvDiagonalFactor: inputs must be 4-D Tensors, got shape %s."
                    % (input_.shape,)
                )
            if input_.shape.as_list()[-1] != filter_shape[-2]:
                raise ValueError(
                    "ConvDiagonalFactor: inputs and filter_shape must agree on "
                    "in_channels: inputs have %s, filter_shape[-2] is %s."
                    % (input_.shape.as_list()[-1], filter_shape[-2])
                )
        for i, outputs_grad in enumerate(outputs_grads):
            for output_grad in outputs_grad:
                if output_grad.shape.ndims != 4:
                    raise ValueError(
                        "ConvDiagonalFactor: outputs_grads[%d] must be 4-D "
                        "Tensors, got shape %s." % (i, output_grad.shape)
                    )
                if output_grad.shape.as_list()[-1] != filter_shape[-1]:
                    raise ValueError(
                        "ConvDiagonalFactor: outputs_grads[%d] and filter_shape "
                        "must agree on out_channels: gradients have %s, "
                        "filter_shape[-1] is %s."
                        % (i, output_grad.shape.as_list()[-1], filter_shape[-1])
                    )
        if len(strides) != 4:
            raise ValueError(
                "ConvDiagonalFactor: strides must be a length-4 list of ints, "
                "got %s." % (strides,)
            )
        if dilations is not None and len(dilations) != 4:
            raise ValueError(
                "ConvDiagonalFactor: dilations must be a length-4 list of ints, "
                "got %s." % (dilations,)
            )

        self._inputs = inputs
        self._outputs_grads = outputs_grads
        self._filter_shape = filter_shape
        self._strides = _int_tuple(strides)
        self._padding = padding
        self._data_format = data_format
        self._dilations = _int_tuple(dilations)
        self._has_bias = has_bias
        self._patches = None
        super(ConvDiagonalFactor, self).__init__()

    @property
    def _var_scope(self):
        return "ff_convdiag_" + naming.scope_string_from_params(
            tuple(self._inputs) + tuple(statistics.flatten(self._outputs_grads))
        )

    @property
    def _cov_shape(self):
        filter_height, filter_width, in_channels, out_channels = self._filter_shape
        return [
            filter_height * filter_width * in_channels + int(self._has_bias),
            out_channels,
        ]

    @property
    def _dtype(self):
        return self._inputs[0].dtype

    def make_covariance_update_op(self, ema_decay, non_finite_policy="skip"):
        # The patches are shared by every source of a tower.
        rates = self._dilations if self._dilations is not None else (1, 1, 1, 1)
        self._patches = []
        for tower in range(self._num_towers):
            with statistics.place_on_device(self._get_data_device(tower)):
                patches = _extract_image_patches(
                    tf.convert_to_tensor(self._inputs[tower]),
                    self._filter_shape,
                    self._strides,
                    rates,
                    self._padding,
                )
                if self._has_bias:
                    patches = statistics.append_homog(patches)
                self._patches.append(patches)
        return super(ConvDiagonalFactor, self).make_covariance_update_op(
            ema_decay, non_finite_policy=non_finite_policy
        )

    def _compute_new_cov(self, source, tower):
        patches = self._patches[tower]
        outputs_grad = tf.convert_to_tensor(self._outputs_grads[source][tower])
        # Per-example gradients [B, K, cout]; fine for the small layers a
        # diagonal approximation is used on.
        per_example_grads = tf.einsum("bijk,bijl->bkl", patches, outputs_grad)
        new_cov = tf.reduce_sum(tf.square(per_example_grads), axis=0)
        return new_cov / tf.cast(tf.shape(patches)[0], new_cov.dtype)


class ConvInputKroneckerFactor(
    layer_data.InputsByTower, inverse_providing.InverseProvidingFactor
):
    """Input factor `Ω̂ = (1/(B·T)) Σ_{b,loc} p̃ p̃ᵀ` of an N-D convolution.

    Shape `[prod(filter_shape[:-2])·cin + has_bias]²`.

    Args:
      inputs: per tower, the layer inputs `[B, *spatial, cin]`.
      filter_shape: `[*spatial_filter, cin, cout]`.
      padding: `"SAME"` or `"VALID"`.
      strides, dilation_rate: spatial-only lists for the default patch
        extractor; 4 entries for `"extract_image_patches"`.
      data_format: None or a channels-last format.
      extract_patches_fn: None / `"extract_convolution_patches"` (N-D,
        `conv_patches.extract_convolution_patches`), `"extract_image_patches"`
        (2-D, the values of `tf.extract_image_patches`, 4-entry strides) or
        `"extract_pointwise_conv2d_patches"` (1×1 conv2d,
        `conv_patches.extract_pointwise_conv2d_patches`); any other value
        raises NotImplementedError when the update op is built.
      has_bias: append a homogeneous coordinate to every patch.
      sub_sample_inputs, sub_sample_patches: (port additions) estimate `Ω̂`
        from a random part of the examples / of the patches (`KfacConfig`'s
        fields of the same names, whose values None takes).
      position_statistics: (port addition) location weights/masks or
        KFAC-reduce (`positions.PositionStatistics`, "examples_first" layout
        over `[B, *spatial_out]`); not combined with sampling.
    """

    def __init__(
        self,
        inputs,
        filter_shape,
        padding,
        strides=None,
        dilation_rate=None,
        data_format=None,
        extract_patches_fn=None,
        has_bias=False,
        sub_sample_inputs=None,
        sub_sample_patches=None,
        position_statistics=None,
    ):
        self._inputs = inputs
        self._position_statistics = position_statistics
        self._filter_shape = _int_tuple(filter_shape)
        self._strides = _int_tuple(strides)
        self._padding = padding
        self._dilation_rate = _int_tuple(dilation_rate)
        self._data_format = data_format
        self._extract_patches_fn = extract_patches_fn
        self._has_bias = has_bias
        super(ConvInputKroneckerFactor, self).__init__()
        config = self.config
        self._sub_sample_inputs = bool(
            config.sub_sample_inputs if sub_sample_inputs is None else sub_sample_inputs
        )
        self._sub_sample_patches = bool(
            config.sub_sample_patches
            if sub_sample_patches is None
            else sub_sample_patches
        )

    @property
    def _tower_inputs(self):
        return self._inputs

    @property
    def _var_scope(self):
        return (
            "ff_convinkron_"
            + naming.scope_string_from_params(
                tuple(self._inputs)
                + (
                    self._filter_shape,
                    self._strides,
                    self._padding,
                    self._dilation_rate,
                    self._data_format,
                    self._has_bias,
                )
            )
            + self._sampling_suffix()
            + positions.scope_suffix(self._position_statistics)
        )

    def _sampling_suffix(self):
        # Unchanged names without sampling; factors differing only in it apart.
        return "".join(
            suffix
            for suffix, on in (
                ("_subinputs", self._sub_sample_inputs),
                ("_subpatches", self._sub_sample_patches),
            )
            if on
        )

    @property
    def _cov_shape(self):
        size = int(np.prod(self._filter_shape[:-2])) * self._filter_shape[-2] + int(
            self._has_bias
        )
        return [size, size]

    def _spatial_geometry(self, inputs):
        """`(strides, dilation_rate)`, spatial-only, of the N-D patch
        extraction that `extract_patches_fn` stands for on `inputs` (None:
        pointwise)."""
        patches_fn = self._extract_patches_fn
        if patches_fn in (None, "extract_convolution_patches"):
            return self._strides, self._dilation_rate
        if patches_fn == "extract_image_patches":
            if inputs.shape.ndims != 4 or len(self._filter_shape) != 4:
                raise ValueError(
                    "extract_image_patches needs 4-D inputs and a 4-entry "
                    "filter_shape, got inputs of shape %s and filter_shape %s."
                    % (inputs.shape, self._filter_shape)
                )
            if self._strides is None or len(self._strides) != 4:
                raise ValueError(
                    "extract_image_patches needs 4-entry strides, got %s."
                    % (self._strides,)
                )
            rates = self._dilation_rate
            if rates is None:
                rates = (1, 1, 1, 1)
            elif len(rates) != 4 or rates[0] != 1 or rates[-1] != 1:
                raise ValueError(
                    "extract_image_patches needs dilation_rate None or "
                    "[1, r1, r2, 1], got %s." % (rates,)
                )
            return self._strides[1:3], rates[1:3]
        if patches_fn == "extract_pointwise_conv2d_patches":
            if self._strides not in (None, (1, 1, 1, 1)):
                raise ValueError(
                    "extract_pointwise_conv2d_patches needs strides None or "
                    "[1, 1, 1, 1], got %s." % (self._strides,)
                )
            if tuple(self._filter_shape[:2]) != (1, 1):
                raise ValueError(
                    "extract_pointwise_conv2d_patches needs a 1x1 filter, got "
                    "filter_shape %s." % (self._filter_shape,)
                )
            return None
        raise NotImplementedError(
            "ConvInputKroneckerFactor: extract_patches_fn must be one of %s, got %r."
            % (_PATCH_FNS, patches_fn)
        )

    def extract_patches(self, inputs):
        """Patches `[B, *spatial_out, …]` whose last axes flatten to `p`."""
        geometry = self._spatial_geometry(inputs)
        if geometry is None:
            return conv_patches.extract_pointwise_conv2d_patches(
                inputs, self._filter_shape, data_format=None
            )
        strides, dilation_rate = geometry
        return conv_patches.extract_convolution_patches(
            inputs,
            self._filter_shape,
            padding=self._padding,
            strides=strides,
            dilation_rate=dilation_rate,
            data_format=self._data_format,
        )

    @property
    def max_num_patches(self) -> int:
        """Patches averaged over with `sub_sample_patches`: `ceil(c·d)`, `d`
        the patch size with the bias coordinate, `c` the configuration's
        `max_num_patches_per_dimension`."""
        return sampling.num_sampled(
            self._cov_shape[0], self.config.max_num_patches_per_dimension
        )

    def patch_rows(self, inputs):
        """`[N, p]` patches (bias coordinate not included) over which `Ω̂`
        averages: one per example and output location (`N = B·T`), of the
        sampled examples and/or only the sampled patches when sampling."""
        inputs = tf.convert_to_tensor(inputs)
        if self._sub_sample_inputs:
            inputs, _ = sampling.sample_examples(
                inputs, self.config.inputs_to_extract_patches_factor
            )
        geometry = self._spatial_geometry(inputs)
        if self._sub_sample_patches and geometry is not None:
            # Only the drawn patches are gathered from the input: the full
            # patch matrix, ~K times the input's size, is never formed.
            strides, dilation_rate = geometry
            arguments = dict(
                inputs=inputs, filter_shape=self._filter_shape, padding=self._padding,
                strides=strides, dilation_rate=dilation_rate,
                data_format=self._data_format,
            )
            indices = sampling.sample_indices(
                conv_patches.num_convolution_patches(**arguments), self.max_num_patches
            )
            return conv_patches.gather_convolution_patches(indices=indices, **arguments)
        patches = self.extract_patches(inputs)
        rows = tf.reshape(patches, [-1, int(np.prod(self._filter_shape[:-1]))])
        if self._sub_sample_patches:
            rows, _ = sampling.sample_rows(rows, self.max_num_patches)
        return rows

    def _compute_new_cov(self, source, tower):
        del source  # One source: the layer inputs.
        # The ones column is folded in without copying the patches.
        if self._position_statistics is None:
            return second_moments.symmetric_second_moment(
                self.patch_rows(self._inputs[tower]), append_ones=self._has_bias
            )
        inputs = tf.convert_to_tensor(self._inputs[tower])
        # [B, locations, p]: one patch per example and output location, in the
        # order of the location weights `[B, *spatial_out]` flattened.
        patches = tf.reshape(
            self.extract_patches(inputs),
            [tf.shape(inputs)[0], -1, int(np.prod(self._filter_shape[:-1]))],
        )
        rows, row_scale, normalizer = self._position_statistics.rows(patches, tower)
        return second_moments.symmetric_second_moment(
            rows, normalizer, append_ones=self._has_bias, row_scale=row_scale
        )


class ConvOutputKroneckerFactor(
    layer_data.SourcesByTowers, inverse_providing.InverseProvidingFactor
):
    """Output factor `Γ̂ = (1/(B·T)) Σ_{b,loc} ds dsᵀ`, shape `[cout, cout]`.

    Args:
      outputs_grads: per source, per tower, gradients `[B, *spatial_out, cout]`.
      data_format: None or a channels-last format.

    Raises:
      ValueError: `data_format` is not channels-last.
    """

    def __init__(self, outputs_grads, data_format=None, position_statistics=None):
        if not conv_patches.is_data_format_channel_last(data_format):
            raise ValueError(
                "ConvOutputKroneckerFactor: data_format must be channels-last, "
                "got %r." % (data_format,)
            )
        self._out_channels = tf.compat.dimension_value(outputs_grads[0][0].shape[-1])
        self._outputs_grads = outputs_grads
        self._position_statistics = position_statistics
        super(ConvOutputKroneckerFactor, self).__init__()

    @property
    def _data(self):
        return self._outputs_grads

    @property
    def _var_scope(self):
        return (
            "ff_convoutkron_"
            + naming.scope_string_from_params(statistics.flatten(self._outputs_grads))
            + positions.scope_suffix(self._position_statistics)
        )

    @property
    def _cov_shape(self):
        return [self._out_channels, self._out_channels]

    def _compute_new_cov(self, source, tower):
        outputs_grad = tf.convert_to_tensor(self._outputs_grads[source][tower])
        if self._position_statistics is None:
            rows, row_scale, normalizer = (
                tf.reshape(outputs_grad, [-1, self._out_channels]),
                None,
                None,
            )
        else:
            rows, row_scale, normalizer = self._position_statistics.rows(
                outputs_grad, tower
            )
        return second_moments.symmetric_second_moment(
            rows, normalizer, row_scale=row_scale
        )
