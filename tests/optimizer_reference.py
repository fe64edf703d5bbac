"""Numpy references and small models shared by the optimizer tests.

Everything here is computed from scratch with dense matrices (no kfac code), so
the optimizer tests compare the library against independent numbers.
"""

import numpy as np
import tensorflow.compat.v1 as tf

import kfac


def append_ones(x):
    """`[x, 1]`: the homogeneous inputs `x̃` of a layer with a bias."""
    return np.hstack([x, np.ones((x.shape[0], 1))])


def softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def input_factor(x):
    """`A = mean_b x̃_b x̃_bᵀ`."""
    xt = append_ones(x)
    return xt.T @ xt / x.shape[0]


def categorical_output_factor(probs):
    """`G = mean_b (diag(p_b) − p_b p_bᵀ)`: the exact Fisher of the logits."""
    return np.mean([np.diag(p) - np.outer(p, p) for p in probs], axis=0)


def pi_adjusted_damping(a_factor, g_factor, damping):
    """`(π√λ, √λ/π)` with `π = sqrt((tr A / dim A) / (tr G / dim G))`."""
    pi = np.sqrt((np.trace(a_factor) / a_factor.shape[0])
                 / (np.trace(g_factor) / g_factor.shape[0]))
    return pi * np.sqrt(damping), np.sqrt(damping) / pi


def damped_factors(a_factor, g_factor, damping):
    damping_a, damping_g = pi_adjusted_damping(a_factor, g_factor, damping)
    return (a_factor + damping_a * np.eye(a_factor.shape[0]),
            g_factor + damping_g * np.eye(g_factor.shape[0]))


def kronecker_precondition(a_factor, g_factor, damping, grad_mat2d):
    """`(A + π√λ I)⁻¹ X (G + √λ/π I)⁻¹` for the mat2d gradient `X` ([in+1, out])."""
    a_damped, g_damped = damped_factors(a_factor, g_factor, damping)
    return np.linalg.inv(a_damped) @ grad_mat2d @ np.linalg.inv(g_damped)


def kronecker_fisher_norm(a_factor, g_factor, damping, mat2d):
    """`vec(X)ᵀ ((A + d_A I) ⊗ (G + d_G I)) vec(X)` with an explicit `np.kron`."""
    a_damped, g_damped = damped_factors(a_factor, g_factor, damping)
    vec = mat2d.reshape(-1)
    return vec @ np.kron(a_damped, g_damped) @ vec


def softmax_regression_gradient(x, labels, weights, bias):
    """Gradient (mat2d `[in+1, out]`) and value of the mean cross-entropy."""
    probs = softmax(x @ weights + bias)
    onehot = np.eye(weights.shape[1])[labels]
    loss = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    return append_ones(x).T @ (probs - onehot) / x.shape[0], loss, probs


def softmax_regression_data(seed=0, batch=6, inputs=3, classes=3):
    rng = np.random.RandomState(seed)
    x = rng.randn(batch, inputs).astype(np.float32)
    labels = rng.randint(0, classes, size=batch).astype(np.int32)
    weights = (0.5 * rng.randn(inputs, classes)).astype(np.float32)
    bias = (0.1 * rng.randn(classes)).astype(np.float32)
    return x, labels, weights, bias


class SoftmaxRegression(object):
    """A registered softmax-regression layer with its mean cross-entropy loss."""

    def __init__(self, x, labels, weights, bias):
        self.x = tf.constant(x)
        self.labels = tf.constant(labels)
        self.weights = tf.get_variable("w", initializer=tf.constant(weights))
        self.bias = tf.get_variable("b", initializer=tf.constant(bias))
        self.logits = tf.matmul(self.x, self.weights) + self.bias
        self.loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self.labels, logits=self.logits))
        self.layer_collection = kfac.LayerCollection()
        self.layer_collection.register_fully_connected(
            (self.weights, self.bias), self.x, self.logits)
        self.layer_collection.register_categorical_predictive_distribution(
            self.logits)

    @property
    def params(self):
        return [self.weights, self.bias]


def mat2d(weights, bias):
    return np.vstack([weights, bias[None, :]])


def split_mat2d(matrix):
    return matrix[:-1], matrix[-1]


def numpy_steps(data, num_steps, lr, damping, momentum=0.0, momentum_type="regular",
                norm_constraint=None):
    """Params (mat2d) after each of `num_steps` K-FAC rounds on softmax regression
    (exact Fisher, `cov_ema_decay` 0): A, G from the current batch, the damped
    Kronecker inverse of the mean-loss gradient, momentum, θ ← θ − lr·step."""
    x, labels, weights, bias = (np.asarray(d, np.float64) if d.dtype.kind == "f" else d
                                for d in data)
    theta = mat2d(weights, bias)
    velocity = np.zeros_like(theta)
    a_factor = input_factor(x)
    params = [theta]
    for _ in range(num_steps):
        grad, _, probs = softmax_regression_gradient(x, labels, *split_mat2d(theta))
        g_factor = categorical_output_factor(probs)
        if momentum_type == "regular":
            precon = kronecker_precondition(a_factor, g_factor, damping, grad)
            if norm_constraint is not None:
                sq_norm = np.sum(grad * precon)
                precon *= min(1.0, np.sqrt(norm_constraint / (lr**2 * sq_norm)))
            velocity = momentum * velocity + precon
            step = velocity
        else:
            velocity = momentum * velocity + grad
            step = kronecker_precondition(a_factor, g_factor, damping, velocity)
        theta = theta - lr * step
        params.append(theta)
    return params
