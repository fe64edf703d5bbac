"""The graph patterns `auto_register_layers` matches, one model per pattern.

Each model is built with raw `tf.compat.v1` ops and registered by hand in the
way the registration docs describe; the scan must find the same blocks.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from tests import auto_registration_helpers as helpers


def conv1d_model(layer_collection):
    x = tf.placeholder(tf.float32, [4, 9, 2], name="examples")
    kernel, bias = helpers.variable("k", [3, 2, 4], 0), helpers.variable("b", [4], 1)
    pre = tf.nn.conv1d(x, kernel, 2, "VALID", dilations=1) + bias
    layer_collection.register_convolution((kernel, bias), x, pre, "VALID", strides=[2])
    return helpers.classifier_head(layer_collection, tf.tanh(pre))


def conv3d_model(layer_collection):
    x = tf.placeholder(tf.float32, [2, 5, 5, 5, 2], name="examples")
    kernel = helpers.variable("k", [2, 2, 2, 2, 3], 0)
    pre = tf.nn.conv3d(x, kernel, [1, 1, 2, 1, 1], "SAME")
    layer_collection.register_convolution(kernel, x, pre, "SAME", strides=[1, 2, 1])
    return helpers.classifier_head(layer_collection, tf.tanh(pre))


def dilated_conv2d_model(layer_collection):
    x = tf.placeholder(tf.float32, [2, 8, 8, 2], name="examples")
    kernel, bias = helpers.variable("k", [3, 3, 2, 3], 0), helpers.variable("b", [3], 1)
    pre = tf.nn.bias_add(
        tf.nn.conv2d(x, kernel, [1, 1, 1, 1], "SAME", dilations=[1, 2, 2, 1]), bias
    )
    layer_collection.register_conv2d(
        (kernel, bias), [1, 1, 1, 1], "SAME", x, pre, dilations=[1, 2, 2, 1]
    )
    return helpers.classifier_head(layer_collection, tf.nn.relu(pre))


def separable_model(layer_collection):
    x = tf.placeholder(tf.float32, [2, 6, 6, 2], name="examples")
    depthwise, pointwise = (
        helpers.variable("dw", [3, 3, 2, 2], 0),
        helpers.variable("pw", [1, 1, 4, 3], 1),
    )
    mid = tf.nn.depthwise_conv2d(x, depthwise, [1, 2, 2, 1], "SAME")
    pre = tf.nn.conv2d(mid, pointwise, [1, 1, 1, 1], "VALID")
    layer_collection.register_separable_conv2d(
        depthwise, pointwise, x, mid, pre, [1, 2, 2, 1], "SAME"
    )
    return helpers.classifier_head(layer_collection, tf.tanh(pre))


def row_bias_and_batch_matmul_model(layer_collection):
    """A `[1, out]` bias added with `+`, and a dense layer over `[B, T, in]`."""
    x = tf.placeholder(tf.float32, [4, 3], name="examples")
    weights, bias = helpers.variable("w", [3, 5], 0), helpers.variable("b", [1, 5], 1)
    pre = tf.matmul(x, weights) + bias
    layer_collection.register_fully_connected((weights, bias), x, pre)
    sequence = tf.reshape(tf.tanh(pre), [4, 5, 1]) * tf.ones([1, 1, 2])
    time_weights = helpers.variable("tw", [2, 3], 2)
    over_time = tf.matmul(sequence, time_weights)
    layer_collection.register_fully_connected(time_weights, sequence, over_time)
    return helpers.classifier_head(layer_collection, tf.tanh(over_time))


PATTERNS = {
    "conv1d": (conv1d_model, ["conv1d (ExpandDims + Conv2D + Squeeze) + AddV2"]),
    "conv3d": (conv3d_model, ["Conv3D"]),
    "dilated_conv2d": (dilated_conv2d_model, ["Conv2D + BiasAdd"]),
    "separable": (separable_model, ["DepthwiseConv2dNative", "Conv2D"]),
    "row_bias_and_batch_matmul": (
        row_bias_and_batch_matmul_model,
        ["MatMul + AddV2", "BatchMatMulV2"],
    ),
}


@pytest.mark.parametrize("model", sorted(PATTERNS))
def test_pattern_is_registered_as_by_hand(model, tf_behavior):
    build_fn, patterns = PATTERNS[model]
    hand, auto = helpers.build_pair(build_fn)
    assert helpers.describe(auto.layer_collection) == helpers.describe(
        hand.layer_collection
    )
    assert [r.patterns for r in auto.registrations] == [[p] for p in patterns] + [
        ["MatMul + BiasAdd"]
    ]


@pytest.mark.parametrize("model", sorted(PATTERNS))
def test_pattern_step_is_the_hand_registrations(model, rng):
    build_fn, _ = PATTERNS[model]
    hand, auto = helpers.build_pair(build_fn)
    with hand.graph.as_default():
        examples = hand.graph.get_tensor_by_name("examples:0")
        shape = examples.shape.as_list()
    feed = {
        "examples:0": rng.randn(*shape).astype(np.float32),
        "labels:0": rng.randint(0, 3, size=shape[0]),
    }
    helpers.assert_same_step(hand, auto, feed)
