"""Tests of the convolution blocks against dense numpy references.

Patches come from explicit loops (checked against `tf.nn.conv2d` first), the
Kronecker block is `T·kron(Ω, Γ)` with `T = num_conv_locations`, and depthwise
blocks are compared with the conv2d-equivalent block of the embedded filter.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from test_fisher_blocks_support import FakeLayerCollection
from test_fisher_blocks_support import apply_dense
from test_fisher_blocks_support import build_block_updates
from test_fisher_blocks_support import conv2d_to_depthwise
from test_fisher_blocks_support import conv_patches
from test_fisher_blocks_support import depthwise_to_conv2d
from test_fisher_blocks_support import kron_damped
from test_fisher_blocks_support import run_updates
from test_fisher_blocks_support import second_moment
from test_fisher_blocks_support import solve_dense
from test_fisher_blocks_support import with_ones

from kfac.ops import fisher_blocks as fb

STRIDES = [1, 1, 1, 1]


def _params(filter_shape, has_bias):
    fltr = tf.zeros(filter_shape, tf.float64)
    if has_bias:
        return (fltr, tf.zeros(filter_shape[-1:], tf.float64))
    return fltr


def _vector(rng, filter_shape, has_bias):
    """(parameter-format numpy vector, its mat2d form)."""
    fltr = rng.randn(*filter_shape)
    mat2d = fltr.reshape(-1, filter_shape[-1])
    if not has_bias:
        return fltr, mat2d
    bias = rng.randn(filter_shape[-1])
    return (fltr, bias), np.concatenate([mat2d, bias[None]], axis=0)


def _to_tf(vector):
    if isinstance(vector, tuple):
        return tuple(tf.constant(v) for v in vector)
    return tf.constant(vector)


def _to_mat2d(result, filter_shape):
    if isinstance(result, tuple):
        return np.concatenate(
            [result[0].reshape(-1, filter_shape[-1]), result[1][None]]
        )
    return result.reshape(-1, filter_shape[-1])


def _register(block, inputs, out_shape, rng):
    """One tower with random output gradients; returns (grads numpy, grads_list)."""
    grads = rng.randn(*out_shape)
    outputs = tf.zeros(out_shape, tf.float64)
    block.register_additional_tower(tf.constant(inputs), outputs)
    return grads, ((tf.constant(grads),),)


def test_numpy_patches_match_tf_conv2d(graph, rng):
    inputs = rng.randn(2, 4, 4, 2)
    fltr = rng.randn(3, 2, 2, 3)
    for padding, strides, dilations in (
        ("SAME", (1, 1), (1, 1)),
        ("VALID", (2, 1), (1, 1)),
        ("SAME", (1, 1), (2, 1)),
    ):
        patches = conv_patches(inputs, (3, 2), strides, padding, dilations)
        expected = tf.nn.conv2d(
            inputs, fltr, [1, *strides, 1], padding, dilations=[1, *dilations, 1]
        )
        with tf.Session() as sess:
            np.testing.assert_allclose(
                patches @ fltr.reshape(-1, 3),
                sess.run(expected),
                rtol=1e-10,
                atol=1e-12,
            )


def test_num_conv_locations_and_maybe_tuple():
    assert fb.num_conv_locations([8, 6, 4, 3], [1, 2, 2, 1]) == 6
    assert fb.num_conv_locations([8, 6, 4, 3], [2, 2]) == 6
    assert fb.num_conv_locations([None, 5, 3], None) == 5
    assert type(fb.num_conv_locations([1, 4, 4, 1], np.array([1, 1, 1, 1]))) is int
    with pytest.raises(ValueError, match="spatial"):
        fb.num_conv_locations([2, None, 4, 3], None)
    assert fb.maybe_tuple([1, 2]) == (1, 2)
    assert fb.maybe_tuple("SAME") == "SAME"


@pytest.mark.parametrize("has_bias,padding", [(False, "VALID"), (True, "SAME")])
def test_conv_kfc_matches_dense(graph, rng, has_bias, padding, tf_behavior):
    inputs, filter_shape = rng.randn(2, 3, 3, 2), (2, 2, 2, 3)
    patches = conv_patches(inputs, (2, 2), padding=padding)
    block = fb.ConvKFCBasicFB(
        FakeLayerCollection(),
        _params(filter_shape, has_bias),
        padding,
        strides=STRIDES,
        extract_patches_fn="extract_image_patches",
    )
    grads, grads_list = _register(block, inputs, patches.shape[:3] + (3,), rng)
    cov_ops, inv_ops = build_block_updates(block, grads_list, 0.3)
    rows = patches.reshape(-1, patches.shape[-1])
    input_cov = second_moment(with_ones(rows) if has_bias else rows)
    output_cov = second_moment(grads.reshape(-1, 3))
    num_locations = 9  # input spatial size / strides, whatever the padding
    damped = kron_damped(input_cov, output_cov, 0.3, num_locations, num_locations)
    vector, mat2d = _vector(rng, filter_shape, has_bias)
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        product, inverse, full = sess.run(
            (
                block.multiply(_to_tf(vector)),
                block.multiply_inverse(_to_tf(vector)),
                block.full_fisher_block(),
            )
        )
    assert block._num_locations == num_locations and block._has_bias == has_bias
    np.testing.assert_allclose(
        _to_mat2d(product, filter_shape), apply_dense(damped, mat2d), rtol=1e-10
    )
    np.testing.assert_allclose(
        _to_mat2d(inverse, filter_shape), solve_dense(damped, mat2d), rtol=1e-10
    )
    np.testing.assert_allclose(
        full, num_locations * np.kron(input_cov, output_cov), rtol=1e-10
    )
    expected_id = (
        "compute_pi_adjusted_damping",
        "cov",
        block._input_factor.name,
        "cov",
        block._output_factor.name,
        "normalize_damping",
        0.3,
        num_locations,
        "power",
        0.5,
        "ref",
        1,
    )
    assert block._output_damping_func.func_id == expected_id


def test_conv_kfc_anchor(graph):
    block = fb.ConvKFCBasicFB(
        FakeLayerCollection(),
        tf.zeros([2, 2, 2, 2]),
        "SAME",
        strides=STRIDES,
        extract_patches_fn="extract_image_patches",
    )
    block.register_additional_tower(tf.ones([2, 2, 2, 2]), tf.ones([2, 2, 2, 2]))
    block.instantiate_factors(((tf.ones([2, 2, 2, 2]),),), 0.5)
    block.register_inverse()
    factors = [block._input_factor, block._output_factor]
    for factor in factors:
        factor.instantiate_cov_variables()  # identity
        factor.instantiate_inv_variables()
    inv_ops = [op for factor in factors for op in factor.make_inverse_update_ops()]
    vector = np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(inv_ops)
        result = sess.run(block.multiply_inverse(tf.constant(vector)))
    assert block._num_locations == 4
    np.testing.assert_allclose(result, vector * 0.136455, rtol=1e-5)


@pytest.mark.parametrize(
    "extract_patches_fn", ["extract_pointwise_conv2d_patches", None]
)
def test_pointwise_conv_kfc_matches_dense(graph, rng, extract_patches_fn):
    """The 1×1 part of a separable convolution."""
    inputs, filter_shape = rng.randn(3, 2, 2, 3), (1, 1, 3, 2)
    strides = STRIDES if extract_patches_fn else [1, 1]
    block = fb.ConvKFCBasicFB(
        FakeLayerCollection(),
        _params(filter_shape, True),
        "VALID",
        strides=strides,
        extract_patches_fn=extract_patches_fn,
    )
    grads, grads_list = _register(block, inputs, (3, 2, 2, 2), rng)
    cov_ops, inv_ops = build_block_updates(block, grads_list, 0.2)
    input_cov = second_moment(with_ones(inputs.reshape(-1, 3)))
    output_cov = second_moment(grads.reshape(-1, 2))
    damped = kron_damped(input_cov, output_cov, 0.2, 4, 4)
    vector, mat2d = _vector(rng, filter_shape, True)
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        inverse = sess.run(block.multiply_inverse(_to_tf(vector)))
    np.testing.assert_allclose(
        _to_mat2d(inverse, filter_shape), solve_dense(damped, mat2d), rtol=1e-10
    )


@pytest.mark.parametrize("has_bias", [False, True])
def test_conv_diagonal_matches_dense(graph, rng, has_bias):
    inputs, filter_shape = rng.randn(3, 3, 3, 2), (2, 2, 2, 2)
    strides = [1, 2, 1, 1]
    patches = conv_patches(inputs, (2, 2), (2, 1), "SAME")
    block = fb.ConvDiagonalFB(
        FakeLayerCollection(), _params(filter_shape, has_bias), strides, "SAME"
    )
    grads, grads_list = _register(block, inputs, patches.shape[:3] + (2,), rng)
    cov_ops, inv_ops = build_block_updates(block, grads_list, 0.4)
    # Per-example gradient Σ_loc p̃ gᵀ, squared, averaged over the batch only.
    per_example = []
    for example_patches, example_grads in zip(patches, grads):
        rows = example_patches.reshape(-1, patches.shape[-1])
        rows = with_ones(rows) if has_bias else rows
        per_example.append(rows.T @ example_grads.reshape(-1, 2))
    diagonal = np.mean(np.square(per_example), axis=0)
    vector, mat2d = _vector(rng, filter_shape, has_bias)
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        product, inverse = sess.run(
            (block.multiply(_to_tf(vector)), block.multiply_inverse(_to_tf(vector)))
        )
    # num_locations · normalize_damping(d, num_locations) = d.
    np.testing.assert_allclose(
        _to_mat2d(product, filter_shape), (diagonal + 0.4) * mat2d, rtol=1e-10
    )
    np.testing.assert_allclose(
        _to_mat2d(inverse, filter_shape), mat2d / (diagonal + 0.4), rtol=1e-10
    )
    assert block._num_locations == 4  # 3·3 // 2
    assert block._damping_func.func_id == (4, "mult", "normalize_damping", 0.4, 4)
    assert block._strides == (1, 2, 1, 1) and block._dilations == (1, 1, 1, 1)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(strides=[1, 1, 1]), "strides"),
        (dict(dilations=[1, 1]), "dilations"),
        (dict(data_format="NCHW"), "channels-last"),
        (dict(params_shape=[2, 2, 2]), "4-D"),
    ],
)
def test_conv_diagonal_errors(graph, kwargs, message):
    params = tf.zeros(kwargs.pop("params_shape", [2, 2, 2, 2]))
    args = dict(strides=STRIDES, padding="SAME")
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fb.ConvDiagonalFB(FakeLayerCollection(), params, **args)


# ----------------------------------------------------------------------------
# Depthwise


def test_filter_conversions_match_depthwise_conv2d(graph, rng):
    inputs, depthwise = rng.randn(2, 4, 4, 3), rng.randn(2, 2, 3, 2)
    conv2d_filter = fb.depthwise_conv2d_filter_to_conv2d_filter(tf.constant(depthwise))
    depthwise_out = tf.nn.depthwise_conv2d(inputs, depthwise, STRIDES, "SAME")
    conv2d_out = tf.nn.conv2d(inputs, conv2d_filter, STRIDES, "SAME")
    back = fb.conv2d_filter_to_depthwise_conv2d_filter(conv2d_filter)
    dense_conv2d = rng.randn(2, 2, 3, 6)
    kept = fb.conv2d_filter_to_depthwise_conv2d_filter(tf.constant(dense_conv2d))
    with tf.Session() as sess:
        values = sess.run((conv2d_filter, depthwise_out, conv2d_out, back, kept))
    np.testing.assert_allclose(values[0], depthwise_to_conv2d(depthwise))
    np.testing.assert_allclose(values[2], values[1], rtol=1e-10)
    np.testing.assert_allclose(values[3], depthwise)
    np.testing.assert_allclose(values[4], conv2d_to_depthwise(dense_conv2d, 2))
    with pytest.raises(ValueError, match="multiple"):
        fb.conv2d_filter_to_depthwise_conv2d_filter(tf.zeros([1, 1, 3, 4]))


@pytest.mark.parametrize(
    "block_cls", [fb.DepthwiseConvKFCBasicFB, fb.DepthwiseConvDiagonalFB]
)
def test_depthwise_blocks_match_conv2d_equivalent(graph, rng, block_cls):
    inputs, depthwise_shape = rng.randn(3, 3, 3, 2), (2, 2, 2, 2)
    patches = conv_patches(inputs, (2, 2), padding="SAME", dilations_hw=(1, 2))
    block = block_cls(
        FakeLayerCollection(),
        tf.zeros(depthwise_shape, tf.float64),
        STRIDES,
        "SAME",
        rate=[1, 2],
    )
    assert block._filter_shape == (2, 2, 2, 4)
    grads, grads_list = _register(block, inputs, (3, 3, 3, 4), rng)
    cov_ops, inv_ops = build_block_updates(block, grads_list, 0.3)
    vector = rng.randn(*depthwise_shape)
    mat2d = depthwise_to_conv2d(vector).reshape(-1, 4)
    rows = patches.reshape(-1, patches.shape[-1])
    if block_cls is fb.DepthwiseConvKFCBasicFB:
        damped = kron_damped(
            second_moment(rows), second_moment(grads.reshape(-1, 4)), 0.3, 9, 9
        )
        expected = solve_dense(damped, mat2d)
    else:
        per_example = [
            p.reshape(-1, rows.shape[1]).T @ g.reshape(-1, 4)
            for p, g in zip(patches, grads)
        ]
        expected = mat2d / (np.mean(np.square(per_example), axis=0) + 0.3)
    expected = conv2d_to_depthwise(expected.reshape(2, 2, 2, 4), 2)
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        result = sess.run(block.multiply_inverse(tf.constant(vector)))
    np.testing.assert_allclose(result, expected, rtol=1e-10)


@pytest.mark.parametrize(
    "block_cls", [fb.DepthwiseConvKFCBasicFB, fb.DepthwiseConvDiagonalFB]
)
def test_depthwise_errors(graph, block_cls):
    lc, fltr = FakeLayerCollection(), tf.zeros([2, 2, 3, 1])
    with pytest.raises(NotImplementedError, match="bias"):
        block_cls(lc, (fltr, tf.zeros([3])), STRIDES, "SAME")
    with pytest.raises(ValueError, match="4-D"):
        block_cls(lc, tf.zeros([2, 2, 3]), STRIDES, "SAME")
    with pytest.raises(ValueError, match="strides"):
        block_cls(lc, fltr, [1, 1], "SAME")
    with pytest.raises(ValueError, match="rate"):
        block_cls(lc, fltr, STRIDES, "SAME", rate=[1, 1, 1])
    with pytest.raises(ValueError, match="channels-last"):
        block_cls(lc, fltr, STRIDES, "SAME", data_format="NCHW")
