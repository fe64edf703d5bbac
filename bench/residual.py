r"""The residual convnet of the convnet benchmark (`python -m bench.convnet
--architecture=residual`).

    stem      conv 3x3, 1 -> 16, batch norm, ReLU, max-pool 2/2   (14x14)
    stage 1   residual block, 16 channels                         (14x14)
    stage 2   conv 3x3 stride 2, 16 -> 32, batch norm, ReLU,
              residual block, 32 channels                         (7x7)
    head      global average pool, linear 32 -> 10, softmax cross-entropy

A residual block is `relu(x + bn(conv(relu(bn(conv(x))))))`. The
convolutions have no bias (the batch norm's shift is one); every one is
registered with `register_conv2d`, every batch norm's scale and shift with
`register_scale_and_shift`, the linear layer with `register_fully_connected`.
The batch norm always normalises with the statistics of the batch it sees
(training mode, also when the loss is evaluated): the benchmark compares
optimizers, and every one is evaluated on the same fixed chunks.
"""

import math

import numpy as np
import tensorflow.compat.v1 as tf

STEM_CHANNELS, WIDE_CHANNELS = 16, 32
KERNEL_SIZE = 3
BATCH_NORM_EPSILON = 1e-5
NUM_LABELS = 10
# (name, input channels, output channels, stride) of every convolution, in
# the order of the forward pass; "a"/"b" are a residual block's two.
CONVOLUTIONS = (
    ("stem", 1, STEM_CHANNELS, 1),
    ("stage1_a", STEM_CHANNELS, STEM_CHANNELS, 1),
    ("stage1_b", STEM_CHANNELS, STEM_CHANNELS, 1),
    ("down", STEM_CHANNELS, WIDE_CHANNELS, 2),
    ("stage2_a", WIDE_CHANNELS, WIDE_CHANNELS, 1),
    ("stage2_b", WIDE_CHANNELS, WIDE_CHANNELS, 1),
)


def initial_weights(seed: int = 0):
    """`{name: array}`: He-normal conv kernels (ReLU network), unit scales
    and zero shifts, a Glorot-uniform linear kernel and zero bias; float32."""
    rng = np.random.RandomState(seed)
    weights = {}
    for name, in_channels, out_channels, _ in CONVOLUTIONS:
        fan_in = KERNEL_SIZE * KERNEL_SIZE * in_channels
        weights[name + "/kernel"] = rng.normal(
            0.0, math.sqrt(2.0 / fan_in),
            size=(KERNEL_SIZE, KERNEL_SIZE, in_channels, out_channels))
        weights[name + "/scale"] = np.ones([out_channels])
        weights[name + "/shift"] = np.zeros([out_channels])
    limit = math.sqrt(6.0 / (WIDE_CHANNELS + NUM_LABELS))
    weights["linear/kernel"] = rng.uniform(-limit, limit,
                                           size=(WIDE_CHANNELS, NUM_LABELS))
    weights["linear/bias"] = np.zeros([NUM_LABELS])
    return {name: value.astype(np.float32) for name, value in weights.items()}


def make_variables(weights):
    """`{name: variable}` under `residual/`, initialised from `weights`."""
    with tf.variable_scope("residual"):
        return {name: tf.get_variable(name, initializer=value)
                for name, value in weights.items()}


def _conv_bn(params, name, inputs, stride, layer_collection):
    """`bn(conv(inputs))` of convolution `name` (no ReLU), registered."""
    kernel = params[name + "/kernel"]
    strides = (1, stride, stride, 1)
    pre = tf.nn.conv2d(inputs, kernel, strides, "SAME")
    mean, variance = tf.nn.moments(pre, axes=[0, 1, 2])
    normalised = (pre - mean) * tf.rsqrt(variance + BATCH_NORM_EPSILON)
    scale, shift = params[name + "/scale"], params[name + "/shift"]
    outputs = normalised * scale + shift
    if layer_collection is not None:
        layer_collection.register_conv2d(kernel, strides, "SAME", inputs, pre)
        layer_collection.register_scale_and_shift((scale, shift), normalised, outputs)
    return outputs


def _residual_block(params, stage, inputs, layer_collection):
    hidden = tf.nn.relu(_conv_bn(params, stage + "_a", inputs, 1, layer_collection))
    branch = _conv_bn(params, stage + "_b", hidden, 1, layer_collection)
    return tf.nn.relu(inputs + branch)


def logits(params, images, layer_collection=None):
    """The network's logits `[B, 10]` for `images [B, 28, 28, 1]`; registers
    every layer with `layer_collection` (None: no registration)."""
    stem = tf.nn.relu(_conv_bn(params, "stem", images, 1, layer_collection))
    stem = tf.nn.max_pool(stem, [1, 2, 2, 1], [1, 2, 2, 1], "SAME")
    stage1 = _residual_block(params, "stage1", stem, layer_collection)
    down = tf.nn.relu(_conv_bn(params, "down", stage1, 2, layer_collection))
    stage2 = _residual_block(params, "stage2", down, layer_collection)
    pooled = tf.reduce_mean(stage2, axis=[1, 2])
    kernel, bias = params["linear/kernel"], params["linear/bias"]
    outputs = tf.nn.bias_add(tf.matmul(pooled, kernel), bias)
    if layer_collection is not None:
        layer_collection.register_fully_connected((kernel, bias), pooled, outputs)
    return outputs
