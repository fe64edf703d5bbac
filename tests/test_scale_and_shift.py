"""`register_scale_and_shift`: the Fisher of a norm layer's scale and shift.

The model is `y = x_hat * scale + shift`, `logits = vec(y) @ W` (W fixed),
with a categorical loss on known targets. In "empirical" mode and with
`cov_ema_decay=0` the factor is the batch estimate `(1/B) Σ_b g_b g_bᵀ`,
`g_b` the per-example gradient of `-log p(target_b)` w.r.t. `(scale,
shift)`, which numpy computes in closed form (float64): `dy_b = reshape((p_b
- onehot_b) Wᵀ)`, `g_scale = Σ_positions x_hat_b ∘ dy_b`, `g_shift = Σ dy_b`,
each summed onto the parameter's shape.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import kfac
from kfac.ops import fisher_blocks

BATCH, CLASSES = 6, 3


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _reduce_onto(values, shape):
    """`[B, ...]` summed onto `[B, prod(shape)]` (numpy, by broadcasting rules)."""
    offset = values.ndim - len(shape)
    axes = tuple(range(1, offset)) + tuple(
        offset + i for i, size in enumerate(shape) if size == 1
    )
    return values.sum(axis=axes, keepdims=True).reshape(len(values), -1)


class Problem(object):
    """Data, parameters and numpy per-example gradients of one configuration."""

    def __init__(self, input_shape, param_shape, has_scale, has_shift, seed=0):
        rng = np.random.RandomState(seed)
        self.x_hat = rng.randn(BATCH, *input_shape)
        self.scale = 1 + 0.3 * rng.randn(*param_shape) if has_scale else None
        self.shift = 0.3 * rng.randn(*param_shape) if has_shift else None
        self.weights = rng.randn(int(np.prod(input_shape)), CLASSES)
        self.labels = rng.randint(0, CLASSES, size=BATCH)
        self.param_shape = tuple(param_shape)

    def outputs(self):
        y = self.x_hat * (1.0 if self.scale is None else self.scale)
        return y + (0.0 if self.shift is None else self.shift)

    def per_example_gradients(self):
        logits = self.outputs().reshape(BATCH, -1) @ self.weights
        d_logits = _softmax(logits) - np.eye(CLASSES)[self.labels]
        d_y = (d_logits @ self.weights.T).reshape(self.x_hat.shape)
        parts = []
        if self.scale is not None:
            parts.append(_reduce_onto(self.x_hat * d_y, self.param_shape))
        if self.shift is not None:
            parts.append(_reduce_onto(d_y, self.param_shape))
        return np.concatenate(parts, axis=1)

    def fisher(self):
        g = self.per_example_gradients()
        return g.T @ g / BATCH

    def build(self, layer_collection, approx=None):
        """The graph; returns `(params key, variables, mean cross-entropy)`."""
        x_hat = tf.constant(self.x_hat)
        variables, outputs = [], x_hat
        scale = shift = None
        if self.scale is not None:
            scale = tf.get_variable("scale", initializer=self.scale)
            variables.append(scale)
            outputs = outputs * scale
        if self.shift is not None:
            shift = tf.get_variable("shift", initializer=self.shift)
            variables.append(shift)
            outputs = outputs + shift
        logits = tf.matmul(tf.reshape(outputs, [BATCH, -1]), self.weights)
        params = scale if shift is None else (scale, shift)
        layer_collection.register_scale_and_shift(params, x_hat, outputs, approx=approx)
        labels = tf.constant(self.labels)
        layer_collection.register_categorical_predictive_distribution(
            logits, targets=labels
        )
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        )
        return variables, loss


CONFIGURATIONS = {
    "dense_both": ((4,), (4,), True, True),
    "image_both": ((3, 3, 2), (2,), True, True),
    "image_scale_only": ((3, 3, 2), (2,), True, False),
    "image_shift_only": ((3, 3, 2), (2,), False, True),
    "layer_norm_shaped": ((2, 3), (2, 3), True, True),
    "broadcast_shape": ((3, 2, 2), (1, 2, 2), True, True),
}


@pytest.mark.parametrize("approx", ["full", "diagonal"])
@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_block_fisher_is_the_exact_fisher_of_the_parameters(name, approx, graph):
    problem = Problem(*CONFIGURATIONS[name])
    layer_collection = kfac.LayerCollection()
    variables, _ = problem.build(layer_collection, approx=approx)
    estimator = kfac.estimator.FisherEstimatorRoundRobin(
        variables=variables,
        cov_ema_decay=0.0,
        damping=0.0,
        layer_collection=layer_collection,
        estimation_mode="empirical",
    )
    _, cov_update_op, _, _, _, _ = estimator.make_ops_and_vars()
    (block,) = layer_collection.get_blocks()
    expected_type = {
        "full": fisher_blocks.ScaleAndShiftFullFB,
        "diagonal": fisher_blocks.ScaleAndShiftDiagonalFB,
    }[approx]
    assert type(block) is expected_type
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(cov_update_op)
        fisher = sess.run(block.full_fisher_block())
    expected = problem.fisher()
    if approx == "diagonal":
        expected = np.diag(np.diag(expected))  # get_cov: the dense diagonal
    np.testing.assert_allclose(fisher, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["image_both", "image_shift_only", "dense_both"])
def test_optimizer_step_is_the_numpy_natural_gradient_step(name, tf_behavior):
    learning_rate, damping = 0.3, 0.05
    problem = Problem(*CONFIGURATIONS[name])
    with tf.Graph().as_default():
        layer_collection = kfac.LayerCollection()
        variables, loss = problem.build(layer_collection)
        optimizer = kfac.KfacOptimizer(
            learning_rate,
            0.0,
            damping,
            layer_collection,
            momentum=0.0,
            estimation_mode="empirical",
        )
        _, cov_update_op, _, inv_update_op, _, _ = optimizer.make_ops_and_vars()
        train_op = optimizer.minimize(loss, var_list=variables)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(cov_update_op)
            sess.run(inv_update_op)
            sess.run(train_op)
            after = sess.run(variables)
    gradient = problem.per_example_gradients().mean(axis=0)
    step = np.linalg.solve(problem.fisher() + damping * np.eye(len(gradient)), gradient)
    before = np.concatenate(
        [p.ravel() for p in (problem.scale, problem.shift) if p is not None]
    )
    np.testing.assert_allclose(
        np.concatenate([a.ravel() for a in after]),
        before - learning_rate * step,
        rtol=1e-7,  # the inverse goes through a float64 eigen/Cholesky solve
        atol=1e-12,
    )


def _normalized(x, axes, epsilon, keepdims=False):
    mean, variance = tf.nn.moments(x, axes, keepdims=keepdims)
    return (x - mean) * tf.rsqrt(variance + epsilon), mean, variance


@pytest.mark.parametrize("norm", ["batch_normalization", "fused_batch_norm", "layer"])
def test_norm_layers_register_and_train(norm, tf_behavior):
    rng = np.random.RandomState(1)
    images = rng.randn(16, 4, 4, 3).astype(np.float32)
    labels = rng.randint(0, CLASSES, size=16)
    epsilon = 1e-3
    with tf.Graph().as_default():
        # K-FAC samples targets for its statistics: a fixed graph seed makes the
        # run the same whatever the test order.
        tf.set_random_seed(0)
        x = tf.constant(images) * 2.0 + 1.0
        gamma = tf.get_variable("gamma", initializer=tf.ones([3]))
        beta = tf.get_variable("beta", initializer=tf.zeros([3]))
        if norm == "layer":
            x_hat, _, _ = _normalized(x, [1, 2, 3], epsilon, keepdims=True)
            outputs = x_hat * gamma + beta
        else:
            x_hat, mean, variance = _normalized(x, [0, 1, 2], epsilon)
            if norm == "fused_batch_norm":
                outputs, _, _ = tf.nn.fused_batch_norm(
                    x, gamma, beta, epsilon=epsilon, is_training=True
                )
            else:
                outputs = tf.nn.batch_normalization(
                    x, mean, variance, beta, gamma, epsilon
                )
        weights = tf.constant(rng.randn(48, CLASSES).astype(np.float32))
        logits = tf.matmul(tf.reshape(outputs, [16, -1]), weights)
        layer_collection = kfac.LayerCollection()
        layer_collection.register_scale_and_shift((gamma, beta), x_hat, outputs)
        layer_collection.register_categorical_predictive_distribution(logits)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        )
        optimizer = kfac.PeriodicInvCovUpdateKfacOpt(
            invert_every=1,
            learning_rate=0.2,
            cov_ema_decay=0.9,
            damping=0.01,
            layer_collection=layer_collection,
        )
        train_op = optimizer.minimize(loss)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            # x_hat is the op's own normalisation: outputs = x_hat at gamma=1, beta=0.
            np.testing.assert_allclose(*sess.run([outputs, x_hat]), atol=1e-4)
            losses = [sess.run([train_op, loss])[1] for _ in range(20)]
    # Six parameters under a fixed random readout: a clear, not a total, fall.
    assert losses[-1] < 0.7 * losses[0]


def test_registration_errors(graph):
    x_hat = tf.zeros([4, 3, 3, 2])
    outputs = x_hat * 1.0
    gamma = tf.get_variable("gamma", [2])
    beta = tf.get_variable("beta", [2])
    layer_collection = kfac.LayerCollection()
    method = "register_scale_and_shift: "
    cases = [
        (dict(params=(gamma, beta), approx="kron"), "Bad value 'kron' for approx"),
        (dict(params=(gamma, beta, beta)), method + "`params` must be a scale"),
        (dict(params=(None, None)), method + "`params` must be a scale"),
        (
            dict(params=(gamma, tf.get_variable("wide", [3]))),
            method + "`shift` has shape (3,); it must broadcast onto the trailing "
            "dimensions of the inputs and outputs (4, 3, 3, 2)",
        ),
        (
            dict(params=gamma, outputs=tf.zeros([4, 3, 3, 3])),
            method + "`inputs` (4, 3, 3, 2) and `outputs` (4, 3, 3, 3) must have "
            "the same shape.",
        ),
    ]
    for overrides, message in cases:
        arguments = dict(inputs=x_hat, outputs=outputs)
        arguments.update(overrides)
        with pytest.raises(ValueError) as raised:
            layer_collection.register_scale_and_shift(**arguments)
        assert message in str(raised.value)
    assert not layer_collection.fisher_blocks
    layer_collection.register_scale_and_shift((gamma, beta), x_hat, outputs)
    with pytest.raises(ValueError, match="already in LayerCollection"):
        layer_collection.register_scale_and_shift(
            (gamma, beta), x_hat, outputs, reuse=False
        )
    layer_collection.register_scale_and_shift((gamma, beta), x_hat, outputs, reuse=True)
    assert layer_collection.fisher_blocks[(gamma, beta)].num_registered_towers == 2


def test_default_approximation_and_shift_only_key(graph):
    x_hat = tf.zeros([4, 2])
    beta = tf.get_variable("beta", [2])
    layer_collection = kfac.LayerCollection()
    assert layer_collection.default_scale_and_shift_approximation == "full"
    layer_collection.set_default_scale_and_shift_approximation("diagonal")
    with pytest.raises(ValueError, match="Bad value 'kron'"):
        layer_collection.set_default_scale_and_shift_approximation("kron")
    layer_collection.register_scale_and_shift((None, beta), x_hat, x_hat + beta)
    block = layer_collection.fisher_blocks[beta]
    assert isinstance(block, fisher_blocks.ScaleAndShiftDiagonalFB)
