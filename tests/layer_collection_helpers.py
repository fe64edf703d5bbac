"""Layers and stand-in blocks shared by the tests of kfac.ops.layer_collection."""

import tensorflow.compat.v1 as tf


def fc_layer(batch=4, fan_in=3, fan_out=2, name="fc", bias=True):
    """`(params, inputs, pre-activations)` of a dense layer in the default graph."""
    w = tf.get_variable(name + "_w", [fan_in, fan_out])
    b = tf.get_variable(name + "_b", [fan_out])
    x = tf.placeholder(tf.float32, [batch, fan_in])
    pre = tf.matmul(x, w) + b if bias else tf.matmul(x, w)
    return ((w, b) if bias else w), x, pre


def conv_layer(bias=True, padding="SAME", name="conv"):
    """`(params, inputs, outputs)` of a 2x2 conv2d layer, 3 -> 5 channels."""
    w = tf.get_variable(name + "_w", [2, 2, 3, 5])
    b = tf.get_variable(name + "_b", [5])
    x = tf.placeholder(tf.float32, [2, 4, 4, 3])
    out = tf.nn.conv2d(x, w, [1, 1, 1, 1], padding) + b
    return ((w, b) if bias else w), x, out


class FakeBlock(object):
    """Stands in for a FisherBlock where only registration is exercised."""


class OtherFakeBlock(object):
    pass
