"""Tests of the quadratic model of KfacOptimizer (momentum_type="qmodel").

Linear regression with a Normal predictive distribution: the mean loss
`Σ‖y − x̃Θ‖² / (2·var·n)` is exactly quadratic with Hessian `JᵀJ/(var·n)`, the
Fisher the model uses, so the model's predicted change can be checked exactly.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from optimizer_reference import SoftmaxRegression
from optimizer_reference import append_ones
from optimizer_reference import input_factor
from optimizer_reference import kronecker_precondition
from optimizer_reference import mat2d
from optimizer_reference import softmax
from optimizer_reference import softmax_regression_data
from optimizer_reference import split_mat2d

import kfac
from kfac.ops._optimizer import qmodel

BATCH, INPUTS, OUTPUTS, VAR = 8, 3, 2, 0.5


def _regression_data(seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(BATCH, INPUTS).astype(np.float32)
    y = rng.randn(BATCH, OUTPUTS).astype(np.float32)
    weights = rng.randn(INPUTS, OUTPUTS).astype(np.float32)
    bias = rng.randn(OUTPUTS).astype(np.float32)
    return x, y, weights, bias


class LinearRegression(object):

    def __init__(self, x, y, weights, bias):
        self.weights = tf.get_variable("w", initializer=tf.constant(weights))
        self.bias = tf.get_variable("b", initializer=tf.constant(bias))
        x = tf.constant(x)
        mean = tf.matmul(x, self.weights) + self.bias
        self.loss = tf.reduce_sum(tf.square(tf.constant(y) - mean)) / (2 * VAR * BATCH)
        self.layer_collection = kfac.LayerCollection()
        self.layer_collection.register_fully_connected(
            (self.weights, self.bias), x, mean)
        self.layer_collection.register_normal_predictive_distribution(mean, var=VAR)

    @property
    def params(self):
        return [self.weights, self.bias]


def _jacobian(x):
    """`∂ vec(x̃Θ) / ∂ vec(Θ)` (row-major vecs) = `x̃ ⊗ I`."""
    return np.kron(append_ones(x.astype(np.float64)), np.eye(OUTPUTS))


def _model_curvature(x, damping):
    """`C = JᵀFJ/n + λI` with `F = I/var`, as an explicit matrix."""
    jac = _jacobian(x)
    return jac.T @ jac / (VAR * BATCH) + damping * np.eye(jac.shape[1])


def _closed_form(grad, delta_big, delta_prev, curvature):
    """`(α, μ, q)` minimising `[α,μ]c + ½[α,μ]M[α,μ]ᵀ` (μ = 0 when δ = 0)."""
    g, d1, d2 = grad.reshape(-1), delta_big.reshape(-1), delta_prev.reshape(-1)
    if not d2.any():
        alpha = -(g @ d1) / (d1 @ curvature @ d1)
        return alpha, 0.0, 0.5 * alpha * (g @ d1)
    m = np.array([[d1 @ curvature @ d1, d1 @ curvature @ d2],
                  [d2 @ curvature @ d1, d2 @ curvature @ d2]])
    c = np.array([g @ d1, g @ d2])
    alpha, mu = -np.linalg.solve(m, c)
    return alpha, mu, 0.5 * (alpha * c[0] + mu * c[1])


def _random_mat2d(rng):
    return rng.randn(INPUTS + 1, OUTPUTS).astype(np.float32)


def _as_params(matrix):
    weights, bias = split_mat2d(matrix)
    return [tf.constant(weights), tf.constant(bias)]


def test_fisher_factor_transpose_products_normal_loss():
    rng = np.random.RandomState(3)
    x, y, weights, bias = _regression_data()
    vectors = [_random_mat2d(rng), _random_mat2d(rng)]
    with tf.Graph().as_default(), tf.Session() as sess:
        model = LinearRegression(x, y, weights, bias)
        products = qmodel.fisher_factor_transpose_products(
            model.layer_collection.losses, model.params,
            [_as_params(vector) for vector in vectors])
        sess.run(tf.global_variables_initializer())
        values = sess.run(products)
    for value, vector in zip(values, vectors):
        assert len(value) == 1  # one loss
        jvp = (_jacobian(x) @ vector.reshape(-1)).reshape(BATCH, OUTPUTS)
        want = jvp / np.sqrt(VAR)
        np.testing.assert_allclose(value[0], want, rtol=1e-5, atol=1e-5)


def test_fisher_factor_transpose_products_categorical_loss_and_cmvp():
    rng = np.random.RandomState(4)
    x, labels, weights, bias = softmax_regression_data()
    vectors = [rng.randn(4, 3).astype(np.float32) for _ in range(2)]
    with tf.Graph().as_default(), tf.Session() as sess:
        model = SoftmaxRegression(x, labels, weights, bias)
        vector_params = [_as_params(vector) for vector in vectors]
        products = qmodel.fisher_factor_transpose_products(
            model.layer_collection.losses, model.params, vector_params)
        computer = kfac.curvature_matrix_vector_products.\
            CurvatureMatrixVectorProductComputer(model.layer_collection.losses,
                                                 model.params)
        cmvp = [computer.multiply_fisher_factor_transpose(v) for v in vector_params]
        sess.run(tf.global_variables_initializer())
        values, cmvp_values = sess.run([products, cmvp])
    probs = softmax(x.astype(np.float64) @ weights + bias)
    sqrt_probs = np.sqrt(probs)
    for value, cmvp_value, vector in zip(values, cmvp_values, vectors):
        z = append_ones(x.astype(np.float64)) @ vector  # J v, per example
        want = sqrt_probs * z - sqrt_probs * np.sum(probs * z, axis=1, keepdims=True)
        np.testing.assert_allclose(value[0], want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(value[0], cmvp_value[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("has_previous_update", [True, False])
def test_qmodel_hyperparams_match_closed_form(tf_behavior, has_previous_update):
    rng = np.random.RandomState(5)
    x, y, weights, bias = _regression_data()
    grad, delta_big = _random_mat2d(rng), _random_mat2d(rng)
    delta_prev = _random_mat2d(rng) if has_previous_update else np.zeros_like(grad)
    damping = 0.3
    with tf.Graph().as_default(), tf.Session() as sess:
        model = LinearRegression(x, y, weights, bias)
        opt = kfac.KfacOptimizer(1.0, 0.0, damping, model.layer_collection, momentum=0,
                                 momentum_type="qmodel", batch_size=BATCH)
        result = opt._compute_qmodel_hyperparams(
            _as_params(delta_big), _as_params(delta_prev), _as_params(grad),
            model.params)
        sess.run(tf.global_variables_initializer())
        alpha, mu, change = sess.run(result)
    want = _closed_form(grad.astype(np.float64), delta_big.astype(np.float64),
                        delta_prev.astype(np.float64), _model_curvature(x, damping))
    np.testing.assert_allclose([alpha, mu, change], want, rtol=1e-4, atol=1e-6)
    if not has_previous_update:
        assert mu == 0.0


def _kfac_direction(x, grad, damping):
    """`Δ = F̂⁻¹ g`: here `A ⊗ (I/var)` is the exact Fisher, damped K-FAC style."""
    return kronecker_precondition(input_factor(x.astype(np.float64)),
                                  np.eye(OUTPUTS) / VAR, damping, grad)


def test_qmodel_steps_follow_the_quadratic_model(tf_behavior):
    x, y, weights, bias = _regression_data()
    damping = 0.05
    with tf.Graph().as_default():
        model = LinearRegression(x, y, weights, bias)
        gs = tf.train.get_or_create_global_step()
        opt = kfac.KfacOptimizer(1.0, 0.0, damping, model.layer_collection, momentum=0,
                                 momentum_type="qmodel", batch_size=BATCH,
                                 estimation_mode="exact")
        # Adaptation (which never triggers within 2 steps) stores the predicted q.
        opt.set_damping_adaptation_params(True, None, lambda batch: model.loss,
                                          damping_adaptation_interval=1000)
        _, cov_update_op, _, inv_update_op, _, _ = opt.make_ops_and_vars()
        train_op = opt.minimize(model.loss, global_step=gs)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            thetas, losses, changes = [mat2d(*sess.run(model.params))], [], []
            for _ in range(2):
                sess.run(cov_update_op)
                sess.run(inv_update_op)
                losses.append(sess.run(model.loss))
                sess.run(train_op)
                thetas.append(mat2d(*sess.run(model.params)))
                changes.append(sess.run(opt._q_model_change))
            losses.append(sess.run(model.loss))

    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    curvature = _model_curvature(x, damping)
    previous = np.zeros_like(thetas[0])
    for step in range(2):
        theta = thetas[step].astype(np.float64)
        grad = append_ones(x64).T @ (append_ones(x64) @ theta - y64) / (VAR * BATCH)
        direction = _kfac_direction(x, grad, damping)
        alpha, mu, change = _closed_form(grad, direction, previous, curvature)
        update = alpha * direction + mu * previous
        np.testing.assert_allclose(thetas[step + 1] - theta, update, rtol=1e-3,
                                   atol=1e-5, err_msg="step {}".format(step))
        np.testing.assert_allclose(changes[step], change, rtol=1e-3)
        # Exactly quadratic loss: the actual change is the model's change minus
        # its damping term ½λ‖s‖².
        actual = losses[step + 1] - losses[step]
        np.testing.assert_allclose(
            actual, change - 0.5 * damping * np.sum(update**2), rtol=2e-3, atol=1e-5)
        if step == 1:
            assert abs(mu) > 1e-6  # the second step uses the previous update
        previous = update


@pytest.mark.parametrize("momentum_type", ["regular", "adam"])
def test_adapting_chief_stores_the_model_change(momentum_type):
    """With adaptation on a chief, "regular" stores q of the optimal (α, μ) over
    (F̂⁻¹g, previous update); "adam" along its step direction alone (μ = 0)."""
    x, y, weights, bias = _regression_data(seed=1)
    lr, momentum, damping = 0.3, 0.5, 0.05
    with tf.Graph().as_default():
        model = LinearRegression(x, y, weights, bias)
        gs = tf.train.get_or_create_global_step()
        opt = kfac.KfacOptimizer(lr, 0.0, damping, model.layer_collection,
                                 momentum=momentum, momentum_type=momentum_type,
                                 batch_size=BATCH, estimation_mode="exact")
        opt.set_damping_adaptation_params(True, None, lambda batch: model.loss,
                                          damping_adaptation_interval=1000)
        _, cov_update_op, _, inv_update_op, _, _ = opt.make_ops_and_vars()
        train_op = opt.minimize(model.loss, global_step=gs)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            thetas, changes = [mat2d(*sess.run(model.params))], []
            for _ in range(2):
                sess.run(cov_update_op)
                sess.run(inv_update_op)
                sess.run(train_op)
                thetas.append(mat2d(*sess.run(model.params)))
                changes.append(sess.run(opt._q_model_change))

    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    curvature = _model_curvature(x, damping)
    velocity = np.zeros_like(thetas[0])
    for step in range(2):
        theta = thetas[step].astype(np.float64)
        grad = append_ones(x64).T @ (append_ones(x64) @ theta - y64) / (VAR * BATCH)
        if momentum_type == "regular":
            direction = _kfac_direction(x, grad, damping)
            _, _, change = _closed_form(grad, direction, -lr * velocity, curvature)
            velocity = momentum * velocity + direction
            update = -lr * velocity
        else:
            velocity = momentum * velocity + grad
            direction = _kfac_direction(x, velocity, damping)
            _, _, change = _closed_form(grad, direction, np.zeros_like(grad),
                                        curvature)
            update = -lr * direction
        np.testing.assert_allclose(thetas[step + 1] - theta, update, rtol=1e-3,
                                   atol=1e-5, err_msg="step {}".format(step))
        np.testing.assert_allclose(changes[step], change, rtol=1e-3,
                                   err_msg="step {}".format(step))
