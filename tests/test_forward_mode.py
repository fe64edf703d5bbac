"""Tests of `_utils.forward_mode.jacobian_vector_products` against central finite
differences of numpy-evaluated graphs (float64) and against the double-backprop
`utils.fwd_gradients`."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from tolerances import assert_close

from kfac.ops import utils
from kfac.ops._utils import forward_mode


def _finite_difference_jvp(sess, outputs, variables, values, tangents, eps=1e-6):
    """`(f(θ + εv) − f(θ − εv)) / 2ε` with the variables assigned in `sess`."""
    def at(sign):
        for var, value, tangent in zip(variables, values, tangents):
            var.load(value + sign * eps * tangent, sess)
        return sess.run(outputs)

    plus, minus = at(1.0), at(-1.0)
    for var, value in zip(variables, values):
        var.load(value, sess)
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


def _mixed_model(rng):
    """A graph using every rule and several ops that take the generic path."""
    inputs = tf.constant(rng.randn(4, 3))
    kernel = tf.get_variable("kernel", initializer=rng.randn(3, 5))
    bias = tf.get_variable("bias", initializer=rng.randn(5))
    kernel2 = tf.get_variable("kernel2", initializer=rng.randn(4, 5))
    table = tf.get_variable("table", initializer=rng.randn(6, 5))
    variables = [kernel, bias, kernel2, table]
    hidden = tf.tanh(tf.matmul(inputs, kernel) + bias)            # MatMul, AddV2, Tanh
    gated = hidden * tf.sigmoid(hidden - bias)                    # Mul, Sub, Sigmoid
    mixed = tf.matmul(gated, kernel2, transpose_b=True)           # transposed MatMul
    embedded = tf.gather(table, [0, 2, 2, 5])                     # generic (gather)
    rectified = tf.nn.relu(mixed) + tf.nn.softplus(embedded[:, :4])  # Relu, generic
    stopped = rectified + tf.stop_gradient(tf.reduce_sum(hidden))
    pooled = tf.reshape(tf.reduce_sum(rectified, axis=1), [2, 2])  # generic ops
    independent = tf.constant(rng.randn(3))                       # no dependence
    bias_only = tf.ones([4, 5], tf.float64) + bias                # only ẏ of an Add
    return [rectified, pooled, independent, bias_only, stopped], variables


def _count_ancestors(tensors, op_type):
    seen, stack = set(), [t.op for t in tf.nest.flatten(tensors)]
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack.extend(t.op for t in op.inputs)
    return sum(1 for op in seen if op.type == op_type)


@pytest.mark.parametrize("num_directions", [1, 2])
def test_matches_finite_differences_and_double_backprop(tf_behavior, graph, rng,
                                                        num_directions):
    outputs, variables = _mixed_model(rng)
    tangents_list = [[tf.constant(rng.randn(*var.shape.as_list())) for var in variables]
                     for _ in range(num_directions)]
    products = forward_mode.jacobian_vector_products(outputs, variables, tangents_list)
    references = [utils.fwd_gradients(outputs, variables, tangents)
                  for tangents in tangents_list]
    # The products need the 2 forward matmuls and 3 tangent matmuls per
    # direction (ȧ·W = 0 for the constant inputs), no backward pass.
    assert _count_ancestors(products, "MatMul") == 2 + 3 * num_directions
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        values = sess.run(variables)
        tangent_values, results, reference_values = sess.run(
            [tangents_list, products, references])
        for direction in range(num_directions):
            # (Finite differences would see through the stop_gradient.)
            expected = _finite_difference_jvp(sess, outputs[:-1], variables, values,
                                              tangent_values[direction])
            for result, reference, exact in zip(results[direction],
                                                reference_values[direction], expected):
                assert_close(result, exact, rtol=1e-6)
                np.testing.assert_allclose(result, reference, rtol=1e-10, atol=1e-12)
            # Nothing flows through tf.stop_gradient, as in tf.gradients.
            np.testing.assert_allclose(results[direction][-1], results[direction][0],
                                       rtol=1e-12)
    # The output built from constants has an exact zero product.
    np.testing.assert_array_equal(results[0][2], np.zeros(3))


def test_variable_listed_twice_adds_tangents(graph, rng):
    weights = tf.get_variable("w", initializer=rng.randn(3, 2))
    inputs = tf.constant(rng.randn(4, 3))
    output = tf.tanh(tf.matmul(inputs, weights))
    first, second = rng.randn(3, 2), rng.randn(3, 2)
    products = forward_mode.jacobian_vector_products(
        [output], [weights, weights], [[tf.constant(first), tf.constant(second)]])
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        result, hidden, x = sess.run([products[0][0], output, inputs])
    expected = (1 - hidden**2) * (x @ (first + second))
    np.testing.assert_allclose(result, expected, rtol=1e-10)


def test_control_flow_uses_double_backprop(tf_behavior, graph, rng):
    weights = tf.get_variable("w", initializer=rng.randn(3, 2))
    inputs = tf.constant(rng.randn(4, 3))
    flag = tf.placeholder_with_default(True, [])
    output = tf.cond(flag, lambda: tf.tanh(tf.matmul(inputs, weights)),
                     lambda: tf.matmul(inputs, weights))
    tangent = rng.randn(3, 2)
    seeds = [forward_mode._seed(weights)]
    assert forward_mode._ops_between(seeds, [output]) is None
    products = forward_mode.jacobian_vector_products(
        [output], [weights], [[tf.constant(tangent)]])
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        result, hidden, x = sess.run([products[0][0], output, inputs])
        linear = sess.run(products[0][0], {flag: False})
    np.testing.assert_allclose(result, (1 - hidden**2) * (x @ tangent), rtol=1e-10)
    np.testing.assert_allclose(linear, x @ tangent, rtol=1e-10)


def test_ops_between_is_topological(graph, rng):
    outputs, variables = _mixed_model(rng)
    order = forward_mode._ops_between(
        [forward_mode._seed(var) for var in variables], outputs)
    position = {op: index for index, op in enumerate(order)}
    for op in order:
        for tensor in op.inputs:
            if tensor.op in position:
                assert position[tensor.op] < position[op]
    assert not [op for op in order if op.type == "Const"]
