"""Tests of the convolution factors of fisher_factors against numpy references
built from explicit loops over examples and output locations (API.md §4)."""

import itertools

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac.ops import fisher_factors as ff


def _np_patches(x, kernel, strides, dilations, padding):
    """`[B, *out, prod(kernel)·C]` patches of an N-D convolution, explicit loops.

    Column order `(kernel offsets…, channel)`, zeros outside the input.
    """
    batch, spatial, channels = x.shape[0], x.shape[1:-1], x.shape[-1]
    out_sizes, pads = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        extent = (k - 1) * d + 1
        if padding == "VALID":
            out, pad = (size - extent) // s + 1, 0
        else:
            out = -(-size // s)
            pad = max((out - 1) * s + extent - size, 0) // 2
        out_sizes.append(out)
        pads.append(pad)
    patches = np.zeros([batch] + out_sizes + [int(np.prod(kernel)) * channels])
    for b in range(batch):
        for location in itertools.product(*[range(o) for o in out_sizes]):
            entries = []
            for offset in itertools.product(*[range(k) for k in kernel]):
                index = [
                    loc * s - p + o * d
                    for loc, s, p, o, d in zip(
                        location, strides, pads, offset, dilations
                    )
                ]
                if all(0 <= i < n for i, n in zip(index, spatial)):
                    entries.append(x[(b,) + tuple(index)])
                else:
                    entries.append(np.zeros(channels))
            patches[(b,) + location] = np.concatenate(entries)
    return patches


def _with_bias(rows):
    return np.concatenate([rows, np.ones(rows.shape[:-1] + (1,))], axis=-1)


def _cov_of_rows(rows):
    rows = rows.reshape(-1, rows.shape[-1])
    return sum(np.outer(r, r) for r in rows) / rows.shape[0]


def _update_values(factor, decay, feed_dicts=({},)):
    factor.instantiate_cov_variables()
    update = factor.make_covariance_update_op(decay)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        return [sess.run(update, feed) for feed in feed_dicts]


def test_numpy_patch_reference_reproduces_convolution(graph, rng):
    x, w = rng.randn(2, 5, 4, 2), rng.randn(3, 2, 2, 3)
    for strides, dilations, padding in [
        ((2, 2), (1, 1), "SAME"),
        ((1, 1), (2, 2), "VALID"),
    ]:
        conv = tf.nn.convolution(
            tf.constant(x),
            tf.constant(w),
            padding,
            strides=strides,
            dilation_rate=dilations,
        )
        with tf.Session() as sess:
            expected = sess.run(conv)
        patches = _np_patches(x, (3, 2), strides, dilations, padding)
        np.testing.assert_allclose(patches @ w.reshape(-1, 3), expected, atol=1e-10)


# -------------------------------------------------------------- conv diagonal


@pytest.mark.parametrize("has_bias", [False, True])
def test_conv_diagonal_one_location_anchor(graph, rng, has_bias):
    inputs = rng.randn(1, 3, 3, 2).astype(np.float32)
    outputs_grad = rng.randn(1, 1, 1, 1).astype(np.float32)
    factor = ff.ConvDiagonalFactor(
        (tf.constant(inputs),),
        ((tf.constant(outputs_grad),),),
        (3, 3, 2, 1),
        strides=[1, 1, 1, 1],
        padding="VALID",
        has_bias=has_bias,
    )
    (cov,) = _update_values(factor, 0.0)
    rows = np.append(inputs.flatten(), 1.0) if has_bias else inputs.flatten()
    np.testing.assert_allclose(
        cov, np.outer(rows, outputs_grad.flatten()) ** 2, rtol=1e-4
    )


@pytest.mark.parametrize(
    "strides, dilations, padding",
    [([1, 2, 2, 1], None, "SAME"), ([1, 1, 1, 1], [1, 2, 2, 1], "VALID")],
)
def test_conv_diagonal_many_locations_two_sources_two_updates(
    graph, tf_behavior, rng, strides, dilations, padding
):
    filter_shape = (2, 2, 2, 3)
    rates = dilations or [1, 1, 1, 1]
    x_value = rng.randn(2, 5, 5, 2)
    np_patches = _with_bias(
        _np_patches(x_value, (2, 2), strides[1:3], rates[1:3], padding)
    )
    out_shape = np_patches.shape[:3] + (3,)
    inputs = tf.constant(x_value, tf.float32)
    grads = [tf.placeholder(tf.float32, out_shape) for _ in range(2)]
    factor = ff.ConvDiagonalFactor(
        (inputs,),
        ((grads[0],), (grads[1],)),
        filter_shape,
        strides,
        padding,
        dilations=dilations,
        has_bias=True,
    )
    feeds = [[rng.randn(*out_shape) for _ in range(2)] for _ in range(2)]
    values = _update_values(factor, 0.5, [dict(zip(grads, feed)) for feed in feeds])

    expected = np.ones((2 * 2 * 2 + 1, 3))
    for feed in feeds:
        estimate = 0.0
        for g in feed:  # sources are summed
            for b in range(2):
                per_example_grad = sum(
                    np.outer(np_patches[b, i, j], g[b, i, j])
                    for i in range(out_shape[1])
                    for j in range(out_shape[2])
                )
                estimate = estimate + per_example_grad**2 / 2.0
        expected = 0.5 * expected + 0.5 * estimate
    np.testing.assert_allclose(values[1], expected, rtol=1e-4)


def test_conv_diagonal_constructor_validation(graph):
    inputs = (tf.ones([1, 3, 3, 2]),)
    grads = ((tf.ones([1, 3, 3, 4]),),)
    shape, strides = (2, 2, 2, 4), [1, 1, 1, 1]
    cases = [
        (dict(data_format="NCHW"), "channels-last"),
        (dict(inputs=(tf.ones([1, 3, 2]),)), "inputs must be 4-D"),
        (dict(inputs=(tf.ones([1, 3, 3, 5]),)), "in_channels"),
        (
            dict(outputs_grads=((tf.ones([1, 3, 4]),),)),
            r"outputs_grads\[0\] must be 4-D",
        ),
        (dict(outputs_grads=((tf.ones([1, 3, 3, 5]),),)), "out_channels"),
        (dict(strides=[1, 1]), "strides"),
        (dict(dilations=[1, 1]), "dilations"),
    ]
    for overrides, message in cases:
        kwargs = dict(
            inputs=inputs,
            outputs_grads=grads,
            filter_shape=shape,
            strides=strides,
            padding="SAME",
        )
        kwargs.update(overrides)
        with pytest.raises(ValueError, match=message):
            ff.ConvDiagonalFactor(**kwargs)


# ------------------------------------------------------- conv input Kronecker


def test_conv_input_kronecker_anchor(graph):
    inputs = tf.constant([[[[1.0]]], [[[2.0]]]])  # (2, 1, 1, 1)
    factor = ff.ConvInputKroneckerFactor(
        (inputs,), filter_shape=(1, 1, 1, 1), padding="SAME", has_bias=True
    )
    (cov,) = _update_values(factor, 0.0)
    np.testing.assert_allclose(cov, [[2.5, 1.5], [1.5, 1.0]])


CONV_INPUT_CASES = [
    # (patch fn, x shape, filter, strides, dilation_rate, padding, has_bias)
    (None, (2, 5, 5, 2), (3, 3, 2, 4), (2, 2), None, "VALID", False),
    (None, (2, 5, 4, 2), (2, 3, 2, 4), (1, 1), (2, 2), "SAME", True),
    ("extract_convolution_patches", (3, 7, 2), (3, 2, 4), (2,), None, "SAME", True),
    (
        "extract_image_patches",
        (2, 5, 5, 2),
        (3, 2, 2, 4),
        (1, 2, 2, 1),
        None,
        "SAME",
        True,
    ),
    (
        "extract_image_patches",
        (2, 6, 5, 1),
        (2, 2, 1, 3),
        (1, 1, 1, 1),
        (1, 2, 2, 1),
        "VALID",
        False,
    ),
    (
        "extract_pointwise_conv2d_patches",
        (2, 3, 2, 3),
        (1, 1, 3, 2),
        None,
        None,
        "VALID",
        True,
    ),
]


@pytest.mark.parametrize("case", CONV_INPUT_CASES)
def test_conv_input_kronecker_patch_modes(graph, rng, case):
    patches_fn, x_shape, filter_shape, strides, dilation_rate, padding, has_bias = case
    x_value = rng.randn(*x_shape)
    spatial = len(x_shape) - 2
    np_strides = (strides[1:-1] if len(strides or ()) == spatial + 2 else strides) or (
        (1,) * spatial
    )
    np_dilations = (
        dilation_rate[1:-1]
        if len(dilation_rate or ()) == spatial + 2
        else dilation_rate
    ) or (1,) * spatial
    patches = _np_patches(x_value, filter_shape[:-2], np_strides, np_dilations, padding)
    if has_bias:
        patches = _with_bias(patches)
    factor = ff.ConvInputKroneckerFactor(
        (tf.constant(x_value, tf.float32),),
        filter_shape,
        padding,
        strides=strides,
        dilation_rate=dilation_rate,
        extract_patches_fn=patches_fn,
        has_bias=has_bias,
    )
    (cov,) = _update_values(factor, 0.0)
    assert factor._cov_shape == [patches.shape[-1]] * 2
    np.testing.assert_allclose(cov, _cov_of_rows(patches), rtol=1e-4, atol=1e-6)


def test_conv_input_kronecker_towers_and_two_updates(graph, tf_behavior, rng):
    ff.set_global_constants(tower_strategy="separate")
    towers = [tf.placeholder(tf.float32, [None, 4, 4, 1]) for _ in range(2)]
    factor = ff.ConvInputKroneckerFactor(
        tuple(towers), (2, 2, 1, 2), "SAME", strides=(2, 2), has_bias=True
    )
    feeds = [[rng.randn(2, 4, 4, 1), rng.randn(3, 4, 4, 1)] for _ in range(2)]
    values = _update_values(factor, 0.25, [dict(zip(towers, f)) for f in feeds])
    expected = np.eye(5)
    for feed in feeds:
        estimate = (
            sum(
                _cov_of_rows(_with_bias(_np_patches(x, (2, 2), (2, 2), (1, 1), "SAME")))
                for x in feed
            )
            / 2
        )
        expected = 0.25 * expected + 0.75 * estimate
    np.testing.assert_allclose(values[1], expected, rtol=1e-5)


def test_conv_input_kronecker_patch_mode_errors(graph):
    inputs = (tf.ones([1, 3, 3, 1]),)

    def build(**kwargs):
        factor = ff.ConvInputKroneckerFactor(inputs, (1, 1, 1, 1), "SAME", **kwargs)
        factor.instantiate_cov_variables()
        return factor.make_covariance_update_op(0.5)

    with pytest.raises(NotImplementedError, match="extract_patches_fn"):
        build(extract_patches_fn="bogus")
    with pytest.raises(ValueError, match="4-entry strides"):
        build(extract_patches_fn="extract_image_patches", strides=(1, 1))
    with pytest.raises(ValueError, match="dilation_rate"):
        build(
            extract_patches_fn="extract_image_patches",
            strides=(1, 1, 1, 1),
            dilation_rate=(2, 1, 1, 1),
        )
    with pytest.raises(ValueError, match="strides"):
        build(
            extract_patches_fn="extract_pointwise_conv2d_patches", strides=(1, 2, 2, 1)
        )


def test_conv_input_kronecker_name(graph):
    inputs = tf.ones([1, 3, 3, 1], name="x")
    factor = ff.ConvInputKroneckerFactor(
        (inputs,), [1, 1, 1, np.int64(2)], "SAME", strides=[1, 1, 1, 1], has_bias=True
    )
    assert factor.name == "ff_convinkron_x_1-1-1-2_1-1-1-1_SAME_None_None_True"


# ------------------------------------------------------ conv output Kronecker


def test_conv_output_kronecker_anchor(graph):
    grads = tf.constant(np.arange(1, 17).reshape(2, 2, 2, 2), tf.float32)
    factor = ff.ConvOutputKroneckerFactor(((grads,),))
    (cov,) = _update_values(factor, 0.5)
    np.testing.assert_allclose(cov, [[43, 46.5], [46.5, 51.5]])


def test_conv_output_kronecker_sources_towers_two_updates(graph, tf_behavior, rng):
    ff.set_global_constants(tower_strategy="separate")
    grads = [
        [tf.placeholder(tf.float32, [None, 3, 3, 2], name="g") for _ in range(2)]
        for _ in range(2)
    ]  # [source][tower]
    factor = ff.ConvOutputKroneckerFactor(tuple(map(tuple, grads)), data_format="NHWC")
    feeds = [
        [[rng.randn(2, 3, 3, 2), rng.randn(1, 3, 3, 2)] for _ in range(2)]
        for _ in range(2)
    ]
    placeholders = [g for source in grads for g in source]
    feed_dicts = [
        dict(zip(placeholders, [v for source in feed for v in source]))
        for feed in feeds
    ]
    values = _update_values(factor, 0.5, feed_dicts)
    expected = np.eye(2)
    for feed in feeds:  # sources summed, towers averaged
        estimate = sum(_cov_of_rows(v) for source in feed for v in source) / 2
        expected = 0.5 * expected + 0.5 * estimate
    np.testing.assert_allclose(values[1], expected, rtol=1e-5)
    assert factor.name.startswith("ff_convoutkron_g")


def test_conv_output_kronecker_requires_channels_last(graph):
    with pytest.raises(ValueError, match="channels-last"):
        ff.ConvOutputKroneckerFactor(((tf.ones([1, 2, 2, 2]),),), data_format="NCHW")
