"""Tests of convolution patch extraction (kfac.ops.utils, API.md §2).

The numpy reference loops over output locations and filter offsets explicitly:
patch[b, *o, *f, c] = x[b, o·s + f·d − pad_before, c] (zero outside the input),
with TensorFlow's SAME rule pad_total = max((out − 1)·s + (k − 1)·d + 1 − in, 0),
pad_before = pad_total // 2.
"""

import itertools

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac.ops import utils
from kfac.ops._utils import conv_patches


def np_output_size_and_pad(size, k, s, d, padding):
    effective = (k - 1) * d + 1
    if padding == "VALID":
        return (size - effective) // s + 1, 0
    out = (size + s - 1) // s
    return out, max((out - 1) * s + effective - size, 0) // 2


def np_patches(x, filter_spatial, padding, strides, dilations):
    """Explicit-loop numpy patches `[batch, *out, *filter, cin]`."""
    spatial_in = x.shape[1:-1]
    sizes_pads = [
        np_output_size_and_pad(n, k, s, d, padding)
        for n, k, s, d in zip(spatial_in, filter_spatial, strides, dilations)
    ]
    out_shape = [size for size, _ in sizes_pads]
    result = np.zeros([x.shape[0]] + out_shape + list(filter_spatial) + [x.shape[-1]])
    for b in range(x.shape[0]):
        for o in itertools.product(*[range(n) for n in out_shape]):
            for f in itertools.product(*[range(k) for k in filter_spatial]):
                pos = [
                    o[i] * strides[i] + f[i] * dilations[i] - sizes_pads[i][1]
                    for i in range(len(o))
                ]
                if all(0 <= p < n for p, n in zip(pos, spatial_in)):
                    result[(b,) + o + f] = x[(b,) + tuple(pos)]
    return result


def run(tensor, feed_dict=None):
    with tf.Session() as sess:
        return sess.run(tensor, feed_dict=feed_dict)


# (input shape, spatial filter, cout); spatial sizes odd and even so that SAME
# padding is asymmetric somewhere.
CASES = {
    1: ([2, 9, 2], [3], 3),
    2: ([2, 6, 7, 2], [3, 2], 3),
    3: ([1, 5, 6, 4, 2], [2, 3, 2], 2),
}
STRIDE_DILATION = {
    "plain": (1, 1),
    "stride2": (2, 1),
    "dilation2": (1, 2),
    "stride2_dilation2": (2, 2),
}


def _case(rank, mode):
    """`(input_shape, filter_spatial, cout, strides, dilations)` of a
    `CASES` rank under a `STRIDE_DILATION` mode."""
    input_shape, filter_spatial, cout = CASES[rank]
    stride, dilation = STRIDE_DILATION[mode]
    return input_shape, filter_spatial, cout, [stride] * rank, [dilation] * rank


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("mode", sorted(STRIDE_DILATION))
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_patches_match_numpy_loops(rank, mode, padding, rng):
    input_shape, filter_spatial, cout, strides, dilations = _case(rank, mode)
    x = rng.randn(*input_shape)
    with tf.Graph().as_default():
        patches = utils.extract_convolution_patches(
            tf.constant(x),
            filter_spatial + [input_shape[-1], cout],
            padding,
            strides=strides,
            dilation_rate=dilations,
        )
        expected = np_patches(x, filter_spatial, padding, strides, dilations)
        assert patches.shape.as_list() == list(expected.shape)
        np.testing.assert_allclose(run(patches), expected, rtol=0, atol=0)


def test_patches_mixed_per_dimension_strides_and_dilations(rng):
    x = rng.randn(2, 9, 8, 3)
    strides, dilations = [2, 3], [3, 2]
    for padding in ("SAME", "VALID"):
        with tf.Graph().as_default():
            patches = utils.extract_convolution_patches(
                tf.constant(x), [2, 3, 3, 1], padding, strides, dilations
            )
            expected = np_patches(x, [2, 3], padding, strides, dilations)
            np.testing.assert_array_equal(run(patches), expected)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("mode", ["plain", "stride2", "dilation2"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_defining_property_against_tf_convolution(rank, mode, padding, rng):
    """reshape(patches) @ reshape(W) equals tf.nn.convolution (TF-supported cases)."""
    input_shape, filter_spatial, cout = CASES[rank]
    stride, dilation = STRIDE_DILATION[mode]
    filter_shape = filter_spatial + [input_shape[-1], cout]
    x = rng.randn(*input_shape)
    w = rng.randn(*filter_shape)
    with tf.Graph().as_default():
        patches = utils.extract_convolution_patches(
            tf.constant(x), filter_shape, padding, [stride] * rank, [dilation] * rank
        )
        product = tf.matmul(
            tf.reshape(patches, [-1, int(np.prod(filter_shape[:-1]))]),
            tf.constant(w.reshape(-1, cout)),
        )
        conv = tf.nn.convolution(
            tf.constant(x),
            tf.constant(w),
            padding,
            strides=[stride] * rank,
            dilation_rate=[dilation] * rank,
        )
        product_value, conv_value = run([product, conv])
    np.testing.assert_allclose(product_value, conv_value.reshape(-1, cout), atol=1e-12)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_stride_with_dilation_samples_the_stride1_dilated_convolution(padding, rng):
    """TF refuses stride>1 with dilation>1; ours is the stride-1 dilated output
    sampled at o·s + (pad_before(stride 1) − pad_before(stride s))."""
    x = rng.randn(2, 8, 7, 2)
    w = rng.randn(3, 2, 2, 3)
    strides, dilations = [2, 3], [2, 2]
    with tf.Graph().as_default():
        patches = utils.extract_convolution_patches(
            tf.constant(x), w.shape, padding, strides, dilations
        )
        product = tf.reshape(
            tf.matmul(tf.reshape(patches, [-1, 12]), tf.constant(w.reshape(12, 3))),
            patches.shape.as_list()[:3] + [3],
        )
        dense = tf.nn.convolution(
            tf.constant(x), tf.constant(w), padding, dilation_rate=dilations
        )
        product_value, dense_value = run([product, dense])
    for axis, (n, k) in enumerate(zip(x.shape[1:3], w.shape[:2])):
        out, pad = np_output_size_and_pad(n, k, strides[axis], dilations[axis], padding)
        _, pad1 = np_output_size_and_pad(n, k, 1, dilations[axis], padding)
        index = [slice(None)] * 4
        index[axis + 1] = slice(
            pad1 - pad, pad1 - pad + (out - 1) * strides[axis] + 1, strides[axis]
        )
        dense_value = dense_value[tuple(index)]
    np.testing.assert_allclose(product_value, dense_value, atol=1e-12)


def test_dtype_follows_inputs(rng):
    for dtype in (tf.float16, tf.float64):
        with tf.Graph().as_default():
            x = tf.constant(rng.randn(1, 4, 4, 1), dtype=dtype)
            patches = utils.extract_convolution_patches(x, [2, 2, 1, 1], "SAME")
            assert patches.dtype == dtype


def test_unknown_batch_and_spatial_dims(rng):
    x = rng.randn(3, 7, 6, 2)
    strides, dilations = [2, 1], [1, 2]
    with tf.Graph().as_default():
        unknown_batch = tf.placeholder(tf.float64, [None, 7, 6, 2])
        unknown_all = tf.placeholder(tf.float64, [None, None, None, 2])
        known = utils.extract_convolution_patches(
            unknown_batch, [3, 2, 2, 4], "SAME", strides, dilations
        )
        dynamic = utils.extract_convolution_patches(
            unknown_all, [3, 2, 2, 4], "SAME", strides, dilations
        )
        assert known.shape.as_list() == [None, 4, 6, 3, 2, 2]
        assert dynamic.shape.as_list()[-3:] == [3, 2, 2]
        known_value, dynamic_value = run(
            [known, dynamic], {unknown_batch: x, unknown_all: x}
        )
    expected = np_patches(x, [3, 2], "SAME", strides, dilations)
    np.testing.assert_array_equal(known_value, expected)
    np.testing.assert_array_equal(dynamic_value, expected)


def test_accepts_int_strides_and_lowercase_padding(rng):
    x = rng.randn(1, 5, 5, 1)
    with tf.Graph().as_default():
        patches = utils.extract_convolution_patches(
            tf.constant(x), [2, 2, 1, 1], "same", strides=2, dilation_rate=1
        )
        np.testing.assert_array_equal(
            run(patches), np_patches(x, [2, 2], "SAME", [2, 2], [1, 1])
        )


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(data_format="NCHW"), "data_format"),
        (dict(strides=[1, 2, 2, 1]), "strides"),
        (dict(strides=[1]), "strides"),
        (dict(strides=[0, 1]), "strides"),
        (dict(dilation_rate=[2, 2, 2]), "dilation_rate"),
        (dict(padding="FULL"), "padding"),
        (dict(padding=[[1, 1], [1, 1]]), "padding"),
        (dict(filter_shape=[3, 3, 4, 5]), "channels"),
        (dict(filter_shape=[3, 3, 3, 2, 5]), "rank"),
        (dict(filter_shape=[3, 2]), "spatial"),
        (dict(filter_shape=[None, 3, 2, 5]), "fully known"),
        (dict(padding="VALID", filter_shape=[7, 1, 2, 1]), "smaller"),
    ],
)
def test_extract_convolution_patches_errors(kwargs, fragment):
    arguments = dict(filter_shape=[3, 3, 2, 5], padding="SAME")
    arguments.update(kwargs)
    with tf.Graph().as_default():
        inputs = tf.zeros([2, 5, 5, 2])
        with pytest.raises(ValueError, match=fragment):
            utils.extract_convolution_patches(inputs, **arguments)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("mode", sorted(STRIDE_DILATION))
def test_conv_output_locations_count(mode, padding):
    stride, dilation = STRIDE_DILATION[mode]
    for spatial_in, spatial_filter in [
        ([9], [3]),
        ([6, 7], [3, 2]),
        ([5, 6, 4], [2, 3, 2]),
    ]:
        rank = len(spatial_in)
        expected = [
            np_output_size_and_pad(n, k, stride, dilation, padding)[0]
            for n, k in zip(spatial_in, spatial_filter)
        ]
        shape = utils.conv_output_spatial_shape(
            spatial_in, spatial_filter, [stride] * rank, padding, [dilation] * rank
        )
        count = utils.num_conv_output_locations(
            spatial_in, spatial_filter, [stride] * rank, padding, [dilation] * rank
        )
        assert shape == expected
        assert count == int(np.prod(expected)) and type(count) is int


def test_conv_output_locations_anchor_values():
    # 7 inputs, filter 3, stride 2: SAME ceil(7/2) = 4, VALID (7-3)//2+1 = 3;
    # dilation 2 makes the filter span 5: VALID (7-5)//2+1 = 2.
    assert utils.conv_output_spatial_shape([7], [3], [2], "SAME") == [4]
    assert utils.conv_output_spatial_shape([7], [3], [2], "VALID") == [3]
    assert utils.conv_output_spatial_shape([7], [3], [2], "VALID", [2]) == [2]
    assert utils.num_conv_output_locations([7, 8], [3, 3], [2, 2], "SAME") == 16
    with pytest.raises(ValueError, match="padding"):
        utils.num_conv_output_locations([7], [3], [1], "FULL")
    with pytest.raises(ValueError, match="same length"):
        utils.num_conv_output_locations([7, 7], [3], [1], "SAME")


def test_pointwise_patches_are_the_inputs(rng):
    x = rng.randn(2, 3, 4, 5)
    with tf.Graph().as_default():
        patches = utils.extract_pointwise_conv2d_patches(tf.constant(x), [1, 1, 5, 6])
        generic = utils.extract_convolution_patches(
            tf.constant(x), [1, 1, 5, 6], "SAME"
        )
        assert patches.shape.as_list() == [2, 3, 4, 1, 1, 5]
        patches_value, generic_value = run([patches, generic])
    np.testing.assert_array_equal(patches_value, x.reshape(2, 3, 4, 1, 1, 5))
    np.testing.assert_array_equal(generic_value, patches_value)


@pytest.mark.parametrize(
    "input_shape, filter_shape, data_format, fragment",
    [
        ([2, 3, 5], [1, 1, 5, 6], None, "rank 4"),
        ([2, 3, 4, 5], [1, 5, 6], None, "4 entries"),
        ([2, 3, 4, 5], [3, 3, 5, 6], None, "1x1"),
        ([2, 3, 4, 5], [1, 1, 5, 6], "NCHW", "data_format"),
        ([2, 3, 4, 5], [1, 1, 4, 6], None, "channels"),
        ([2, None, 4, 5], [1, 1, 5, 6], None, "static"),
    ],
)
def test_pointwise_patches_errors(input_shape, filter_shape, data_format, fragment):
    with tf.Graph().as_default():
        inputs = tf.placeholder(tf.float32, input_shape)
        with pytest.raises(ValueError, match=fragment):
            utils.extract_pointwise_conv2d_patches(
                inputs, filter_shape, data_format=data_format
            )


def _patch_op_types(tensor):
    return {op.type for op in tensor.graph.get_operations()}


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("mode", sorted(STRIDE_DILATION))
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_identity_filter_and_slices_give_the_numpy_patches(rank, mode, padding, rng,
                                                           monkeypatch):
    # Few channels take the identity-filter convolution, many the slices;
    # forcing each threshold runs both on the same cases.
    input_shape, filter_spatial, cout, strides, dilations = _case(rank, mode)
    x = rng.randn(*input_shape)
    expected = np_patches(x, filter_spatial, padding, strides, dilations)
    by_convolution = mode != "stride2_dilation2"  # tf.nn.convolution refuses both
    for max_channels, convolves in ((0, False), (16, by_convolution)):
        monkeypatch.setattr(conv_patches, "IDENTITY_FILTER_MAX_CHANNELS", max_channels)
        with tf.Graph().as_default():
            patches = utils.extract_convolution_patches(
                tf.constant(x), filter_spatial + [input_shape[-1], cout], padding,
                strides, dilations)
            types = _patch_op_types(patches)
            assert any(kind.startswith("Conv") for kind in types) == convolves
            np.testing.assert_allclose(run(patches), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("mode", sorted(STRIDE_DILATION))
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_gathered_patches_are_the_rows_drawn(rank, mode, padding, rng):
    input_shape, filter_spatial, cout, strides, dilations = _case(rank, mode)
    x = rng.randn(*input_shape)
    rows = np_patches(x, filter_spatial, padding, strides, dilations).reshape(
        -1, int(np.prod(filter_spatial)) * input_shape[-1])
    indices = rng.permutation(len(rows))[:max(1, len(rows) // 3)]
    indices = np.concatenate([indices, [0, len(rows) - 1]])  # both ends
    arguments = dict(filter_shape=filter_spatial + [input_shape[-1], cout],
                     padding=padding, strides=strides, dilation_rate=dilations)
    with tf.Graph().as_default():
        count = conv_patches.num_convolution_patches(tf.constant(x), **arguments)
        assert count == len(rows)
        gathered = conv_patches.gather_convolution_patches(
            tf.constant(x), indices=tf.constant(indices, tf.int32), **arguments)
        np.testing.assert_array_equal(run(gathered), rows[indices])


def test_gathered_patches_with_unknown_batch_and_spatial_dims(rng):
    x = rng.randn(3, 7, 6, 2)
    arguments = dict(filter_shape=[3, 2, 2, 4], padding="SAME", strides=[2, 1],
                     dilation_rate=[1, 2])
    rows = np_patches(x, [3, 2], "SAME", [2, 1], [1, 2]).reshape(-1, 12)
    indices = rng.permutation(len(rows))[:20]
    with tf.Graph().as_default():
        unknown = tf.placeholder(tf.float64, [None, None, None, 2])
        count = conv_patches.num_convolution_patches(unknown, **arguments)
        gathered = conv_patches.gather_convolution_patches(
            unknown, indices=indices, **arguments)
        assert gathered.shape.as_list() == [20, 12]
        count, gathered = run([count, gathered], {unknown: x})
    assert count == len(rows) == 3 * 4 * 6
    np.testing.assert_array_equal(gathered, rows[indices])
