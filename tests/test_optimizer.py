"""Tests of kfac.optimizer.KfacOptimizer: full steps against numpy.

The parts' helpers are tested in test_optimizer_parts.py, construction and the
training API in test_optimizer_api.py, the quadratic model in
test_optimizer_qmodel.py and damping adaptation in test_optimizer_damping.py.
"""


import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from optimizer_reference import SoftmaxRegression
from optimizer_reference import categorical_output_factor
from optimizer_reference import input_factor
from optimizer_reference import kronecker_fisher_norm
from optimizer_reference import kronecker_precondition
from optimizer_reference import mat2d
from optimizer_reference import numpy_steps
from optimizer_reference import softmax_regression_data
from optimizer_reference import softmax_regression_gradient

import kfac

# --------------------------------------------------------------------------
# Full steps on softmax regression against a numpy natural-gradient step.


def _kfac_steps(data, num_steps, lr, damping, **kwargs):
    """Params after each of `num_steps` (cov update, inverse update, train) rounds."""
    with tf.Graph().as_default():
        model = SoftmaxRegression(*data)
        opt = kfac.KfacOptimizer(lr, 0.0, damping, model.layer_collection,
                                 estimation_mode="exact", **kwargs)
        _, cov_update_op, _, inv_update_op, _, _ = opt.make_ops_and_vars()
        train_op = opt.minimize(model.loss)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            params = [mat2d(*sess.run(model.params))]
            for _ in range(num_steps):
                sess.run(cov_update_op)
                sess.run(inv_update_op)
                sess.run(train_op)
                params.append(mat2d(*sess.run(model.params)))
    return params




@pytest.mark.parametrize("momentum_type, momentum, num_steps", [
    ("regular", 0.0, 1),
    ("regular", 0.9, 2),
    ("adam", 0.9, 2),
])
def test_steps_equal_numpy_natural_gradient(tf_behavior, momentum_type, momentum,
                                            num_steps):
    data = softmax_regression_data()
    got = _kfac_steps(data, num_steps, lr=0.5, damping=0.1, momentum=momentum,
                      momentum_type=momentum_type)
    want = numpy_steps(data, num_steps, lr=0.5, damping=0.1, momentum=momentum,
                        momentum_type=momentum_type)
    assert not np.allclose(want[1], want[0], atol=1e-2)  # the step is not tiny
    for step, (got_params, want_params) in enumerate(zip(got, want)):
        np.testing.assert_allclose(got_params, want_params, rtol=1e-4, atol=1e-5,
                                   err_msg="params after step {}".format(step))


@pytest.mark.parametrize("norm_constraint, binds", [(1e-3, True), (1e3, False)])
def test_norm_constraint_bounds_the_update_fisher_norm(norm_constraint, binds):
    data = softmax_regression_data()
    lr, damping = 0.5, 0.1
    got = _kfac_steps(data, 1, lr, damping, momentum=0.0,
                      norm_constraint=norm_constraint)
    update = got[1] - got[0]

    x, labels, weights, bias = (np.asarray(d, np.float64) for d in data)
    grad, _, probs = softmax_regression_gradient(x, labels.astype(int), weights, bias)
    a_factor, g_factor = input_factor(x), categorical_output_factor(probs)
    unclipped = -lr * kronecker_precondition(a_factor, g_factor, damping, grad)
    sq_norm_unclipped = kronecker_fisher_norm(a_factor, g_factor, damping, unclipped)
    sq_norm = kronecker_fisher_norm(a_factor, g_factor, damping, update)
    if binds:
        assert sq_norm_unclipped > 10 * norm_constraint
        np.testing.assert_allclose(sq_norm, norm_constraint, rtol=1e-3)
        np.testing.assert_allclose(update * np.sqrt(sq_norm_unclipped / sq_norm),
                                   unclipped, rtol=1e-3, atol=1e-6)
    else:
        assert sq_norm_unclipped < norm_constraint
        np.testing.assert_allclose(update, unclipped, rtol=1e-4, atol=1e-6)


def test_optimizer_trains_an_mlp(tf_behavior):
    rng = np.random.RandomState(1)
    inputs = rng.randn(32, 4).astype(np.float32)
    labels = (np.sin(2 * inputs[:, 0]) + inputs[:, 1] > 0).astype(np.int32)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        x = tf.constant(inputs)
        w1 = tf.get_variable("w1", initializer=tf.constant(0.5 * rng.randn(4, 8),
                                                           tf.float32))
        b1 = tf.get_variable("b1", [8], initializer=tf.zeros_initializer())
        pre1 = tf.matmul(x, w1) + b1
        hidden = tf.tanh(pre1)
        w2 = tf.get_variable("w2", initializer=tf.constant(0.5 * rng.randn(8, 2),
                                                           tf.float32))
        b2 = tf.get_variable("b2", [2], initializer=tf.zeros_initializer())
        logits = tf.matmul(hidden, w2) + b2
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.constant(labels), logits=logits))
        lc = kfac.LayerCollection()
        lc.register_fully_connected((w1, b1), x, pre1)
        lc.register_fully_connected((w2, b2), hidden, logits)
        lc.register_categorical_predictive_distribution(logits)
        gs = tf.train.get_or_create_global_step()
        opt = kfac.KfacOptimizer(0.2, 0.9, 0.05, lc, momentum=0.5)
        _, cov_update_op, _, inv_update_op, _, _ = opt.make_ops_and_vars()
        train_op = opt.minimize(loss, global_step=gs)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            initial = sess.run(loss)
            for _ in range(30):
                sess.run(cov_update_op)
                sess.run(inv_update_op)
                sess.run(train_op)
            final, step = sess.run([loss, gs])
    assert step == 30
    assert final < 0.5 * initial
