"""Small registered models, numpy Fisher factors and an estimator factory shared
by the estimator tests (test_estimator*.py)."""

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops import estimator
from kfac.ops import layer_collection as lc_lib

BATCH, FAN_IN, CLASSES = 6, 3, 4
DAMPING = 0.1


def softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def with_ones(x):
    return np.concatenate([x, np.ones([x.shape[0], 1])], axis=1)


def exact_output_factor(probs):
    """(1/B) Σ_b (diag(p_b) − p_b p_bᵀ): the per-example softmax Fisher, averaged."""
    return np.mean([np.diag(p) - np.outer(p, p) for p in probs], axis=0)


def data(seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(BATCH, FAN_IN).astype(np.float32)
    w = rng.randn(FAN_IN, CLASSES).astype(np.float32)
    b = rng.randn(CLASSES).astype(np.float32)
    labels = rng.randint(CLASSES, size=BATCH).astype(np.int32)
    return x, w, b, labels


def softmax_regression(towers=1):
    """Registers `logits = x W + b` (split in `towers` towers) and its softmax loss."""
    x_np, w_np, b_np, labels = data()
    w = tf.get_variable("w", initializer=w_np)
    b = tf.get_variable("b", initializer=b_np)
    lc = lc_lib.LayerCollection()
    rows = BATCH // towers
    for tower in range(towers):
        with tf.variable_scope("tower", reuse=tower > 0):
            x = tf.constant(x_np[tower * rows : (tower + 1) * rows])
            logits = tf.matmul(x, w) + b
            lc.register_fully_connected((w, b), x, logits)
            lc.register_categorical_predictive_distribution(
                logits,
                targets=tf.constant(labels[tower * rows : (tower + 1) * rows]),
                name="logits",
            )
    return lc, (w, b), x_np, softmax(x_np @ w_np + b_np)


def make_estimator(lc, variables, **kwargs):
    kwargs.setdefault("cov_ema_decay", 0.0)  # one update sets cov to the estimate
    kwargs.setdefault("damping", DAMPING)
    return estimator.make_fisher_estimator(
        variables=list(variables), layer_collection=lc, **kwargs
    )


def run_updates(sess, cov_update_op, inv_update_op):
    sess.run(tf.global_variables_initializer())
    sess.run(cov_update_op)
    sess.run(inv_update_op)


def two_layer_model(seed=1, batch=BATCH, classes=CLASSES):
    """`(lc, (w1, b1, w2))`: registered `softmax(tanh(x W1 + b1) W2)`, 5 hidden
    units, random values from `seed`."""
    rng = np.random.RandomState(seed)
    x = tf.constant(rng.randn(batch, FAN_IN).astype(np.float32))
    w1 = tf.get_variable("w1", initializer=rng.randn(FAN_IN, 5).astype(np.float32))
    b1 = tf.get_variable("b1", initializer=rng.randn(5).astype(np.float32))
    w2 = tf.get_variable("w2", initializer=rng.randn(5, classes).astype(np.float32))
    pre1 = tf.matmul(x, w1) + b1
    hidden = tf.tanh(pre1)
    logits = tf.matmul(hidden, w2)
    lc = lc_lib.LayerCollection()
    lc.register_fully_connected((w1, b1), x, pre1)
    lc.register_fully_connected(w2, hidden, logits)
    lc.register_categorical_predictive_distribution(logits)
    return lc, (w1, b1, w2)


def damped_kronecker_factors(input_cov, output_cov, damping=DAMPING):
    """`(A + π√d I, G + √d/π I)` with π the trace-norm ratio (numpy)."""
    pi = np.sqrt(
        np.trace(input_cov)
        * output_cov.shape[0]
        / (np.trace(output_cov) * input_cov.shape[0])
    )
    left = input_cov + pi * np.sqrt(damping) * np.eye(input_cov.shape[0])
    right = output_cov + np.sqrt(damping) / pi * np.eye(output_cov.shape[0])
    return left, right


def damped_kronecker_power(input_cov, output_cov, mat2d, exp, damping=DAMPING):
    """(A + π√d I)^exp X (G + √d/π I)^exp with π the trace-norm ratio (numpy)."""
    left, right = damped_kronecker_factors(input_cov, output_cov, damping)
    if exp == -1:
        return np.linalg.solve(left, mat2d) @ np.linalg.inv(right)
    return left @ mat2d @ right
