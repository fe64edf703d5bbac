"""Convolution patch extraction and output-size arithmetic.

For a convolution `y = conv(x, W)` (Grosse & Martens 2016, §3: the input
Kronecker factor is the covariance of the patches), the patch at an output
location is the vector of input values the filter touches there, in filter
order, so that

    reshape(patches, [-1, prod(spatial_filter)·cin]) @ reshape(W, [-1, cout])
      == reshape(tf.nn.convolution(x, W, padding, strides, dilation_rate),
                 [-1, cout]).

Padding follows TensorFlow's rule for an effective (dilated) filter size
`k_eff = (k − 1)·d + 1`:
  SAME:  out = ceil(in / s), pad_total = max((out − 1)·s + k_eff − in, 0),
         pad_before = pad_total // 2, pad_after = pad_total − pad_before;
  VALID: out = ceil((in − k_eff + 1) / s), no padding.
"""

import itertools
from typing import List
from typing import Optional
from typing import Sequence

import numpy as np
import tensorflow.compat.v1 as tf

_PADDINGS = ("SAME", "VALID")


def is_data_format_channel_last(data_format: Optional[str]) -> bool:
    """True for `None` (the default NHWC/NWC/NDHWC) or a format ending in "C"."""
    if data_format is None:
        return True
    return data_format.endswith("C")


def _normalize_padding(padding, func_name: str) -> str:
    if isinstance(padding, str) and padding.upper() in _PADDINGS:
        return padding.upper()
    raise ValueError(
        "%s: padding must be one of %s, got %r." % (func_name, _PADDINGS, padding)
    )


def _normalize_spatial(
    values, num_spatial: int, arg_name: str, func_name: str
) -> List[int]:
    """Spatial-only strides/dilations as a list of `num_spatial` ints ≥ 1."""
    if values is None:
        return [1] * num_spatial
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = [values] * num_spatial
    values = list(values)
    if len(values) != num_spatial:
        raise ValueError(
            "%s: %s must have one entry per spatial dimension (%d), got %r."
            % (func_name, arg_name, num_spatial, values)
        )
    if any(int(value) != value or value < 1 for value in values):
        raise ValueError(
            "%s: %s entries must be integers >= 1, got %r."
            % (func_name, arg_name, values)
        )
    return [int(value) for value in values]


def _static_filter_shape(filter_shape, func_name: str) -> List[int]:
    dims = tf.TensorShape(filter_shape).as_list()
    if any(dim is None for dim in dims):
        raise ValueError(
            "%s: filter_shape must be fully known, got %r." % (func_name, dims)
        )
    return dims


def _ceil_div(numerator, denominator):
    # Works for Python ints and integer Tensors alike (floor division).
    return -(-numerator // denominator)


def _maximum(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return tf.maximum(a, b)


def _output_size_and_padding(
    input_size, filter_size: int, stride: int, dilation: int, padding: str
):
    """`(out, pad_before, pad_after)` along one spatial axis (module docstring)."""
    effective_size = (filter_size - 1) * dilation + 1
    if padding == "VALID":
        output_size = _maximum(_ceil_div(input_size - effective_size + 1, stride), 0)
        return output_size, 0, 0
    output_size = _ceil_div(input_size, stride)
    pad_total = _maximum((output_size - 1) * stride + effective_size - input_size, 0)
    pad_before = pad_total // 2
    return output_size, pad_before, pad_total - pad_before


def conv_output_spatial_shape(
    input_spatial_shape: Sequence[int],
    filter_spatial_shape: Sequence[int],
    strides: Optional[Sequence[int]] = None,
    padding: str = "SAME",
    dilation_rate: Optional[Sequence[int]] = None,
) -> List[int]:
    """Spatial output shape of a convolution, exactly, for SAME and VALID.

    Args:
      input_spatial_shape: spatial input sizes (no batch/channel dims).
      filter_spatial_shape: spatial filter sizes.
      strides: spatial strides (None → 1).
      padding: "SAME" or "VALID".
      dilation_rate: spatial dilations (None → 1).

    Returns:
      List of output sizes: `ceil(in/s)` (SAME) or
      `max(ceil((in − (k−1)·d)/s), 0)` (VALID).
    """
    func_name = "conv_output_spatial_shape"
    num_spatial = len(filter_spatial_shape)
    if len(input_spatial_shape) != num_spatial:
        raise ValueError(
            "%s: input_spatial_shape %r and filter_spatial_shape %r must have "
            "the same length."
            % (func_name, list(input_spatial_shape), list(filter_spatial_shape))
        )
    padding = _normalize_padding(padding, func_name)
    strides = _normalize_spatial(strides, num_spatial, "strides", func_name)
    dilations = _normalize_spatial(
        dilation_rate, num_spatial, "dilation_rate", func_name
    )
    return [
        int(_output_size_and_padding(int(size), int(k), s, d, padding)[0])
        for size, k, s, d in zip(
            input_spatial_shape, filter_spatial_shape, strides, dilations
        )
    ]


def num_conv_output_locations(
    input_spatial_shape: Sequence[int],
    filter_spatial_shape: Sequence[int],
    strides: Optional[Sequence[int]] = None,
    padding: str = "SAME",
    dilation_rate: Optional[Sequence[int]] = None,
) -> int:
    """Number of output locations `prod(conv_output_spatial_shape(...))`.

    A Python int (not a numpy integer), so it can go into op names.
    """
    return int(
        np.prod(
            conv_output_spatial_shape(
                input_spatial_shape,
                filter_spatial_shape,
                strides,
                padding,
                dilation_rate,
            ),
            dtype=np.int64,
        )
    )


# Up to this many input channels, the patches come from a convolution with
# an identity filter of `prod(spatial_filter)·cin` outputs (one multiply-add
# per entry of the filter): on 2 CPU cores, 5x5 patches of 128 images of
# 28x28x1 take 0.5 ms that way against 3.2 ms by strided slices and 10.3 ms
# by `tf.image.extract_patches`; with 3 channels 2.8 / 4.6 / 18.5 ms; with
# 16 channels the filter's `(k·k·cin)²` weights make it the slowest (15.6 /
# 3.5 / 6.0 ms), so wider inputs are sliced. The results are equal: every
# output is one input times 1 plus zeros (on a GPU with TF32 convolutions
# they are rounded to TF32, as the covariance's matmul then rounds them).
IDENTITY_FILTER_MAX_CHANNELS = 3


class _Geometry(object):
    """The padded input and the sizes of one convolution's patches (see
    `extract_convolution_patches` for the arguments and errors)."""

    def __init__(self, inputs, filter_shape, padding, strides, dilation_rate,
                 data_format, func_name):
        if not is_data_format_channel_last(data_format):
            raise ValueError(
                "%s: data_format must be channels-last (None, 'NWC', 'NHWC', "
                "'NDHWC'), got %r." % (func_name, data_format)
            )
        inputs = tf.convert_to_tensor(inputs)
        filter_dims = _static_filter_shape(filter_shape, func_name)
        num_spatial = len(filter_dims) - 2
        if num_spatial < 1:
            raise ValueError(
                "%s: filter_shape must be [*spatial_filter, in_channels, "
                "out_channels] with at least one spatial dim, got %r."
                % (func_name, filter_dims)
            )
        if inputs.shape.ndims != num_spatial + 2:
            raise ValueError(
                "%s: inputs must have rank %d (batch, %d spatial dims, channels) "
                "to match filter_shape %r, got shape %s."
                % (func_name, num_spatial + 2, num_spatial, filter_dims, inputs.shape)
            )
        # as_list(): plain ints/None also under disable_v2_behavior().
        static_shape = inputs.shape.as_list()
        self.spatial_filter = filter_dims[:-2]
        self.in_channels = filter_dims[-2]
        if static_shape[-1] is not None and static_shape[-1] != self.in_channels:
            raise ValueError(
                "%s: inputs have %d channels but filter_shape %r expects %d "
                "(filter_shape[-2])."
                % (func_name, static_shape[-1], filter_dims, self.in_channels)
            )
        padding = _normalize_padding(padding, func_name)
        self.strides = _normalize_spatial(strides, num_spatial, "strides", func_name)
        self.dilations = _normalize_spatial(
            dilation_rate, num_spatial, "dilation_rate", func_name
        )

        dynamic_shape = tf.shape(inputs)
        self.output_sizes, paddings = [], [[0, 0]]
        for axis in range(num_spatial):
            input_size = static_shape[axis + 1]
            if input_size is None:
                input_size = dynamic_shape[axis + 1]
            output_size, before, after = _output_size_and_padding(
                input_size,
                self.spatial_filter[axis],
                self.strides[axis],
                self.dilations[axis],
                padding,
            )
            if isinstance(output_size, int) and output_size < 1:
                raise ValueError(
                    "%s: with VALID padding, spatial dim %d of inputs (%d) is "
                    "smaller than the dilated filter size %d."
                    % (
                        func_name,
                        axis,
                        input_size,
                        (self.spatial_filter[axis] - 1) * self.dilations[axis] + 1,
                    )
                )
            self.output_sizes.append(output_size)
            paddings.append([before, after])
        paddings.append([0, 0])
        self._inputs = inputs
        self._paddings = None if padding == "VALID" else paddings
        self._padded = None
        self.batch_size = static_shape[0]
        if self.batch_size is None:
            self.batch_size = dynamic_shape[0]

    @property
    def padded(self):
        """The input padded by TensorFlow's rule, made on first use (counting
        patches needs only the sizes)."""
        if self._padded is None:
            self._padded = self._inputs
            if self._paddings is not None:
                self._padded = tf.pad(self._inputs, self._paddings)
        return self._padded

    @property
    def patch_size(self) -> int:
        return int(np.prod(self.spatial_filter)) * self.in_channels

    def offsets(self) -> np.ndarray:
        """`[K, num_spatial]` input offsets `f·d` of the filter's entries, in
        row-major filter order (the row order of `reshape(W, [-1, cout])`)."""
        grid = itertools.product(*[range(size) for size in self.spatial_filter])
        return np.array(list(grid), dtype=np.int64) * np.array(self.dilations)

    def by_identity_filter(self):
        """`[batch, *spatial_out, K·cin]`: a VALID convolution of the padded
        input with the identity filter."""
        size = self.patch_size
        identity = np.eye(size).reshape(self.spatial_filter + [self.in_channels, size])
        return tf.nn.convolution(
            self.padded,
            tf.constant(identity, dtype=self.padded.dtype),
            padding="VALID",
            strides=self.strides,
            dilation_rate=self.dilations,
        )

    def by_slices(self):
        """`[batch, *spatial_out, K, cin]`: one strided slice of the padded
        input per filter offset."""
        slices = []
        for offset in self.offsets():
            index = [slice(None)]
            for axis, begin in enumerate(offset):
                stride = self.strides[axis]
                extent = _maximum((self.output_sizes[axis] - 1) * stride + 1, 0)
                index.append(slice(int(begin), int(begin) + extent, stride))
            index.append(slice(None))
            slices.append(self.padded[tuple(index)])
        return tf.stack(slices, axis=-2)

    def identity_filter_is_faster(self) -> bool:
        """Few input channels, a float type and no strides together with
        dilations (which `tf.nn.convolution` refuses)."""
        return (
            self.in_channels <= IDENTITY_FILTER_MAX_CHANNELS
            and self._inputs.dtype in (tf.float32, tf.float64)
            and len(self.spatial_filter) <= 3
            and (max(self.strides) == 1 or max(self.dilations) == 1)
        )


def extract_convolution_patches(
    inputs,
    filter_shape,
    padding,
    strides=None,
    dilation_rate=None,
    name=None,
    data_format=None,
):
    """Patches of an N-D (1-D, 2-D, 3-D, ...) channels-last convolution.

    Returns `patches[b, *o, *f, c] = x_pad[b, o·s + f·d, c]`, where `x_pad` is
    the input padded by TensorFlow's rule (module docstring), so that the
    defining property in the module docstring holds.

    Port notes: the original convolved with a float32 identity filter of
    `prod(spatial_filter)·cin` output channels. This port does so only for
    inputs of at most `IDENTITY_FILTER_MAX_CHANNELS` channels (where it is the
    fastest, in `inputs.dtype`) and otherwise takes one strided slice of the
    padded input per filter offset: no multiplications, and strides > 1
    together with dilations > 1 (which `tf.nn.convolution` refuses) work;
    there the result is the stride-1 dilated output sampled with TensorFlow's
    padding rule for the strided convolution. Spatial sizes may be unknown
    statically. Channels-first formats are rejected (TF CPU kernels lack them).

    Args:
      inputs: `[batch, *spatial_in, in_channels]` Tensor.
      filter_shape: `[*spatial_filter, in_channels, out_channels]`.
      padding: "SAME" or "VALID".
      strides: spatial-only strides (list of one int per spatial dim; an int is
        broadcast; None → 1).
      dilation_rate: spatial-only dilations (same format as `strides`).
      name: name scope (default `"extract_convolution_patches"`).
      data_format: None or a channels-last format ("NWC", "NHWC", "NDHWC").

    Returns:
      `[batch, *spatial_out, *spatial_filter, in_channels]` Tensor.

    Raises:
      ValueError: channels-first `data_format`; `filter_shape` not fully known
        or with fewer than 3 entries; `inputs` rank not `len(filter_shape)`;
        `inputs.shape[-1] != filter_shape[-2]`; wrong length or values of
        `strides`/`dilation_rate`; unknown `padding`; VALID padding with a
        spatial input smaller than the dilated filter.
    """
    func_name = "extract_convolution_patches"
    with tf.name_scope(name, func_name, [inputs]):
        geometry = _Geometry(inputs, filter_shape, padding, strides, dilation_rate,
                             data_format, func_name)
        if geometry.identity_filter_is_faster():
            patches = geometry.by_identity_filter()
        else:
            patches = geometry.by_slices()
        return tf.reshape(
            patches,
            [geometry.batch_size] + geometry.output_sizes + geometry.spatial_filter
            + [geometry.in_channels],
        )


def num_convolution_patches(inputs, filter_shape, padding, strides=None,
                            dilation_rate=None, data_format=None):
    """`batch · prod(spatial_out)`: the rows of the patches' `[N, K·cin]`
    matrix (a Python int when the shapes are static, else a scalar Tensor).
    Arguments and errors as `extract_convolution_patches`."""
    geometry = _Geometry(inputs, filter_shape, padding, strides, dilation_rate,
                         data_format, "num_convolution_patches")
    count = geometry.batch_size
    for size in geometry.output_sizes:
        count = count * size
    return count


def gather_convolution_patches(inputs, filter_shape, padding, indices, strides=None,
                               dilation_rate=None, name=None, data_format=None):
    """Rows `indices` of the patches' `[N, K·cin]` matrix, without extracting
    the others: equal to

        tf.gather(tf.reshape(extract_convolution_patches(inputs, filter_shape,
                  padding, strides, dilation_rate), [N, K·cin]), indices)

    for int `indices` in `[0, N)` (`N = num_convolution_patches(...)`), at a
    cost proportional to `len(indices)·K·cin` instead of `N·K·cin`. Other
    arguments and errors as `extract_convolution_patches`.
    """
    func_name = "gather_convolution_patches"
    with tf.name_scope(name, func_name, [inputs, indices]):
        geometry = _Geometry(inputs, filter_shape, padding, strides, dilation_rate,
                             data_format, func_name)
        indices = tf.cast(tf.convert_to_tensor(indices), tf.int64)
        # [1 + num_spatial, m]: the example and output location of each row.
        located = tf.unravel_index(
            indices,
            tf.cast(tf.stack([geometry.batch_size] + geometry.output_sizes), tf.int64),
        )
        example, locations = located[0], tf.transpose(located[1:])
        starts = locations * tf.constant(geometry.strides, tf.int64)
        # [m, K, num_spatial] input positions, then the example in front.
        positions = starts[:, None, :] + tf.constant(geometry.offsets())[None]
        examples = tf.tile(example[:, None, None], [1, positions.shape[1], 1])
        windows = tf.gather_nd(geometry.padded, tf.concat([examples, positions], -1))
        return tf.reshape(windows, [-1, geometry.patch_size])


def extract_pointwise_conv2d_patches(inputs, filter_shape, name=None, data_format=None):
    """Patches of a 1×1 (pointwise) conv2d: `inputs` as `[batch, H, W, 1, 1, cin]`.

    Args:
      inputs: `[batch, H, W, in_channels]` Tensor with static H, W, channels.
      filter_shape: `[1, 1, in_channels, out_channels]`.
      name: name scope (default `"extract_pointwise_conv2d_patches"`).
      data_format: None or "NHWC".

    Returns:
      `[batch, H, W, 1, 1, in_channels]` Tensor.

    Raises:
      ValueError: `inputs` not rank 4 or without static H, W, channels;
        `filter_shape` without 4 entries or not 1×1; channels-first
        `data_format`; channel mismatch.
    """
    func_name = "extract_pointwise_conv2d_patches"
    inputs_shape = inputs.shape
    if inputs_shape.ndims != 4:
        raise ValueError(
            "%s: inputs must have rank 4 ([batch, H, W, channels]), got shape %s."
            % (func_name, inputs_shape)
        )
    filter_dims = tf.TensorShape(filter_shape).as_list()
    if len(filter_dims) != 4:
        raise ValueError(
            "%s: filter_shape must have 4 entries ([1, 1, in, out]), got %r."
            % (func_name, filter_dims)
        )
    if filter_dims[0] != 1 or filter_dims[1] != 1:
        raise ValueError(
            "%s: filter_shape must be 1x1 along spatial dimensions, got %r."
            % (func_name, filter_dims)
        )
    if not is_data_format_channel_last(data_format):
        raise ValueError(
            "%s: data_format must be channels-last (None or 'NHWC'), got %r."
            % (func_name, data_format)
        )
    height, width, in_channels = inputs_shape.as_list()[1:]
    if height is None or width is None or in_channels is None:
        raise ValueError(
            "%s: inputs need static H, W and channels, got shape %s."
            % (func_name, inputs_shape)
        )
    if filter_dims[2] is not None and filter_dims[2] != in_channels:
        raise ValueError(
            "%s: inputs have %d channels but filter_shape %r expects %d."
            % (func_name, in_channels, filter_dims, filter_dims[2])
        )
    with tf.name_scope(name, func_name, [inputs]):
        return tf.reshape(inputs, [-1, height, width, 1, 1, in_channels])
