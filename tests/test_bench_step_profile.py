"""bench/step_profile.py: the arithmetic of matrix products from static
shapes, fused products traced back to their MatMul, and a traced step's
counts against a hand count."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bench import step_profile


@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False),
                                                      (False, True), (True, True)])
def test_multiply_adds_of_a_product_follow_its_transposes(transpose_a, transpose_b):
    with tf.Graph().as_default():
        left = tf.zeros([3, 4] if transpose_a else [4, 3])
        right = tf.zeros([5, 3] if transpose_b else [3, 5])
        product = tf.matmul(left, right, transpose_a=transpose_a,
                            transpose_b=transpose_b)
        assert step_profile.multiply_adds(product.op) == 4 * 3 * 5


def test_multiply_adds_of_a_batched_product_broadcast_its_batch():
    with tf.Graph().as_default():
        left = tf.zeros([2, 1, 4, 3])
        right = tf.zeros([6, 5, 3])
        product = tf.linalg.matmul(left, right, adjoint_b=True)
        assert product.shape.as_list() == [2, 6, 4, 5]
        assert step_profile.multiply_adds(product.op) == 2 * 6 * 4 * 3 * 5


def test_unknown_shapes_count_nothing():
    with tf.Graph().as_default():
        left = tf.placeholder(tf.float32, [None, 3])
        product = tf.matmul(left, tf.zeros([3, 2]))
        assert step_profile.multiply_adds(product.op) == 0


def test_product_of_walks_up_from_a_fused_activation():
    with tf.Graph().as_default() as graph:
        product = tf.matmul(tf.zeros([2, 3]), tf.zeros([3, 4]))
        out = tf.tanh(tf.nn.bias_add(product, tf.zeros([4])))
        assert step_profile.product_of(graph, out.op.name) is product.op
        assert step_profile.product_of(graph, product.op.name) is product.op
        assert step_profile.product_of(graph, "no-such-op") is None
        assert step_profile.product_of(graph, "zeros") is None


def test_a_traced_step_counts_the_products_it_ran():
    """The gradients of `sum(tanh(x W1 + b) W2)`, x [64, 32], W1 [32, 48],
    W2 [48, 8]: the forward product x W1 (the second is not needed: the
    sum's gradient is constant), then W2's gradient and h's (64·48·8 each)
    and W1's (64·32·48; x's gradient is not needed)."""
    rng = np.random.RandomState(0)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [64, 32])
        w1 = tf.Variable(rng.randn(32, 48).astype(np.float32))
        b = tf.Variable(np.zeros(48, np.float32))
        w2 = tf.Variable(rng.randn(48, 8).astype(np.float32))
        loss = tf.reduce_sum(tf.matmul(tf.tanh(tf.matmul(x, w1) + b), w2))
        gradients = tf.gradients(loss, [w1, b, w2])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            profile = step_profile.profile_step(
                sess, gradients, {x: rng.randn(64, 32)}, runs=2)
    assert profile["uncounted_products"] == 0
    assert profile["multiply_adds"] == 2 * 64 * 32 * 48 + 2 * 64 * 48 * 8
    assert 0 < profile["matmul_op_seconds"] <= profile["op_seconds"]
    assert profile["wall_seconds"] > 0
    rates = step_profile.rates(profile)
    assert 0 < rates["matmul_share"] <= 1
    assert rates["gflops"] == pytest.approx(
        2e-9 * profile["multiply_adds"] / profile["wall_seconds"])
