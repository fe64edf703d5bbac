"""Auto-registration of batch norm and layer norm (`register_scale_and_shift`).

A residual convnet with fused batch norms and an MLP with
`tf.nn.batch_normalization` and a hand-written layer norm, registered by hand
(the normalised `x_hat` built from the batch moments) and by the scan: the
same blocks, the same `x_hat` values, and the same optimizer step.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from tests import auto_registration_helpers as helpers

BATCH = 8
EPSILON = 1e-3


def _scale_and_shift(channels, seed):
    rng = np.random.RandomState(seed)
    gamma = tf.get_variable(
        "gamma", initializer=(1 + 0.1 * rng.randn(channels)).astype(np.float32)
    )
    beta = tf.get_variable(
        "beta", initializer=(0.1 * rng.randn(channels)).astype(np.float32)
    )
    return gamma, beta


def _normalized(x, axes, keepdims=False):
    mean, variance = tf.nn.moments(x, axes, keepdims=keepdims)
    return (x - mean) * tf.rsqrt(variance + EPSILON), mean, variance


def _conv_bn(layer_collection, name, inputs, channels, seed):
    with tf.variable_scope(name):
        kernel = helpers.variable(
            "kernel", [3, 3, int(inputs.shape[-1]), channels], seed
        )
        pre = tf.nn.conv2d(inputs, kernel, [1, 1, 1, 1], "SAME")
        layer_collection.register_conv2d(kernel, [1, 1, 1, 1], "SAME", inputs, pre)
        gamma, beta = _scale_and_shift(channels, seed + 1)
        outputs, _, _ = tf.nn.fused_batch_norm(
            pre, gamma, beta, epsilon=EPSILON, is_training=True
        )
        x_hat, _, _ = _normalized(pre, [0, 1, 2])
        layer_collection.register_scale_and_shift((gamma, beta), x_hat, outputs)
        return outputs


def residual_bn_convnet(layer_collection):
    """A stem and two residual stages of conv + batch norm (+ skip), pooled."""
    x = tf.placeholder(tf.float32, [BATCH, 6, 6, 2], name="examples")
    hidden = tf.nn.relu(_conv_bn(layer_collection, "stem", x, 4, 0))
    for stage in range(2):
        branch = tf.nn.relu(
            _conv_bn(layer_collection, "res%da" % stage, hidden, 4, 10 * stage + 2)
        )
        branch = _conv_bn(layer_collection, "res%db" % stage, branch, 4, 10 * stage + 4)
        hidden = tf.nn.relu(hidden + branch)
    return helpers.classifier_head(layer_collection, tf.reduce_mean(hidden, [1, 2]))


def mlp_with_norms(layer_collection):
    """dense -> tf.nn.batch_normalization -> dense -> hand-written layer norm."""
    x = tf.placeholder(tf.float32, [BATCH, 5], name="examples")
    with tf.variable_scope("fc0"):
        weights, bias = helpers.variable("w", [5, 6], 0), helpers.variable("b", [6], 1)
        pre = tf.nn.bias_add(tf.matmul(x, weights), bias)
        layer_collection.register_fully_connected((weights, bias), x, pre)
    with tf.variable_scope("bn"):
        gamma, beta = _scale_and_shift(6, 2)
        x_hat, mean, variance = _normalized(pre, [0])
        normalized = tf.nn.batch_normalization(
            pre, mean, variance, beta, gamma, EPSILON
        )
        layer_collection.register_scale_and_shift((gamma, beta), x_hat, normalized)
    with tf.variable_scope("fc1"):
        hidden = tf.nn.relu(normalized)
        weights = helpers.variable("w", [6, 4], 3)
        pre = tf.matmul(hidden, weights)
        layer_collection.register_fully_connected(weights, hidden, pre)
    with tf.variable_scope("ln"):
        gamma, beta = _scale_and_shift(4, 4)
        ln_hat, _, _ = _normalized(pre, [1], keepdims=True)
        outputs = ln_hat * gamma + beta
        layer_collection.register_scale_and_shift((gamma, beta), ln_hat, outputs)
    return helpers.classifier_head(layer_collection, tf.tanh(outputs))


MODELS = {
    "residual_bn_convnet": (residual_bn_convnet, (6, 6, 2)),
    "mlp_with_norms": (mlp_with_norms, (5,)),
}
SCALE_AND_SHIFT = ("ScaleAndShiftFullFB",)


def _feed(rng, shape):
    return {
        "examples:0": rng.randn(BATCH, *shape).astype(np.float32),
        "labels:0": rng.randint(0, 3, size=BATCH),
    }


def _scale_and_shift_inputs(built, feed):
    with built.graph.as_default():
        blocks = [
            b
            for b in built.layer_collection.get_blocks()
            if type(b).__name__ in SCALE_AND_SHIFT
        ]
        inputs = [b._tower_inputs for b in blocks]
        fed = {built.graph.get_tensor_by_name(k): v for k, v in feed.items()}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return sess.run(inputs, fed)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_norm_layers_are_registered_as_by_hand(model, tf_behavior, rng):
    build_fn, shape = MODELS[model]
    hand, auto = helpers.build_pair(build_fn)
    expected = helpers.describe(hand.layer_collection, skip_inputs_of=SCALE_AND_SHIFT)
    assert helpers.describe(auto.layer_collection, SCALE_AND_SHIFT) == expected
    assert sum(entry[0] in SCALE_AND_SHIFT for entry in expected) in (2, 5)
    feed = _feed(rng, shape)
    hand_inputs = _scale_and_shift_inputs(hand, feed)
    auto_inputs = _scale_and_shift_inputs(auto, feed)
    assert len(hand_inputs) == len(auto_inputs)
    for hand_value, auto_value in zip(hand_inputs, auto_inputs):
        np.testing.assert_allclose(auto_value, hand_value, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_norm_layers_step_is_the_hand_registrations(model, rng):
    build_fn, shape = MODELS[model]
    hand, auto = helpers.build_pair(build_fn)
    helpers.assert_same_step(hand, auto, _feed(rng, shape))


def test_patterns_of_the_norms(rng):
    _, auto = helpers.build_pair(mlp_with_norms)
    assert [r.patterns for r in auto.registrations] == [
        ["MatMul + BiasAdd"],
        ["tf.nn.batch_normalization"],
        ["MatMul"],
        ["Mul + AddV2"],
        ["MatMul + BiasAdd"],
    ]
    _, auto = helpers.build_pair(residual_bn_convnet)
    assert [r.patterns[0] for r in auto.registrations][:2] == [
        "Conv2D",
        "FusedBatchNormV3",
    ]
