"""numpy references of the curvature-product tests: a tiny float64 tanh MLP whose
parameters are slices of one flat vector `θ`, its losses (`Kind`), finite
difference Jacobians and Hessians, and the dense `F`, `B`, `H` per loss."""

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops import curvature_matrix_vector_products as cmvp
from kfac.ops import loss_functions as lf

X = np.array([[0.3, -1.2], [1.0, 0.5], [-0.7, 0.8]])
HIDDEN = 3
VAR = 0.7
MIN_VARIANCE = 0.5


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softplus(z):
    return np.log1p(np.exp(z))


def block_diag(blocks):
    size = sum(block.shape[0] for block in blocks)
    out = np.zeros((size, size))
    start = 0
    for block in blocks:
        end = start + block.shape[0]
        out[start:end, start:end] = block
        start = end
    return out


class Kind(object):
    """A loss on the network outputs, with dense numpy references.

    Vectors over the loss inputs are flattened as `concat(ravel(t) for t in
    tf.nest.flatten(loss.inputs))`; inner vectors as `ravel(inner)`.
    """

    def __init__(self, name, num_outputs, targets, natural):
        self.name = name
        self.num_outputs = num_outputs
        self.targets = targets
        self.natural = natural

    # network outputs -> loss inputs (TF and numpy versions).
    def tf_inputs(self, out):
        if self.name == "normal_mean_variance":
            return out[:, :2], tf.nn.softplus(out[:, 2:]) + MIN_VARIANCE
        return out

    def np_inputs(self, out):
        if self.name == "normal_mean_variance":
            return [out[:, :2], softplus(out[:, 2:]) + MIN_VARIANCE]
        return [out]

    def make_loss(self, out, with_targets=True):
        inputs = self.tf_inputs(out)
        targets = self.targets if with_targets else None
        if self.name == "categorical":
            return lf.CategoricalLogitsNegativeLogProbLoss(inputs, targets=targets)
        if self.name == "normal_mean":
            return lf.NormalMeanNegativeLogProbLoss(inputs, var=VAR, targets=targets)
        if self.name == "bernoulli":
            return lf.MultiBernoulliNegativeLogProbLoss(inputs, targets=targets)
        return lf.NormalMeanVarianceNegativeLogProbLoss(*inputs, targets=targets)

    def nll(self, flat_inputs):
        """Negative log-likelihood as a function of the flattened loss inputs."""
        y = self.targets
        if self.name == "categorical":
            logits = flat_inputs.reshape(-1, 3)
            return -np.sum(np.log(softmax(logits))[np.arange(len(y)), y])
        if self.name == "normal_mean":
            mean = flat_inputs.reshape(y.shape)
            return np.sum((y - mean) ** 2 / (2 * VAR) + 0.5 * np.log(2 * np.pi * VAR))
        if self.name == "bernoulli":
            p = sigmoid(flat_inputs.reshape(y.shape))
            return -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))
        mean, variance = np.split(flat_inputs, 2)
        mean, variance = mean.reshape(y.shape), variance.reshape(y.shape)
        return np.sum(
            (y - mean) ** 2 / (2 * variance) + 0.5 * np.log(2 * np.pi * variance)
        )

    def fisher_and_factor(self, inputs):
        """Dense `F` and `B` (`B Bᵀ = F`) over the flattened loss inputs."""
        if self.name == "categorical":
            p = softmax(inputs[0])
            q = np.sqrt(p)
            fisher = block_diag([np.diag(r) - np.outer(r, r) for r in p])
            factor = block_diag([np.diag(s) - np.outer(r, s) for r, s in zip(p, q)])
            return fisher, factor
        if self.name == "normal_mean":
            size = inputs[0].size
            return np.eye(size) / VAR, np.eye(size) / np.sqrt(VAR)
        if self.name == "bernoulli":
            d = (sigmoid(inputs[0]) * (1 - sigmoid(inputs[0]))).ravel()
            return np.diag(d), np.diag(np.sqrt(d))
        mean, variance = inputs
        rows, dim = mean.shape
        fisher = np.diag(
            np.concatenate([(1 / variance).ravel(), (1 / (2 * variance**2)).ravel()])
        )
        factor = np.zeros((2 * rows * dim, 2 * rows * dim))
        for b in range(rows):
            for i in range(dim):
                # inner row b is [mean half, variance half].
                factor[b * dim + i, b * 2 * dim + i] = 1 / np.sqrt(variance[b, i])
                factor[rows * dim + b * dim + i, b * 2 * dim + dim + i] = 1 / (
                    np.sqrt(2) * variance[b, i]
                )
        return fisher, factor


KINDS = {
    "categorical": Kind("categorical", 3, np.array([2, 0, 1]), True),
    "normal_mean": Kind(
        "normal_mean", 2, np.array([[0.5, -1.0], [1.5, 0.2], [0.0, 0.3]]), True
    ),
    "bernoulli": Kind(
        "bernoulli", 2, np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), True
    ),
    "normal_mean_variance": Kind(
        "normal_mean_variance",
        4,
        np.array([[0.5, -1.0], [1.5, 0.2], [0.0, 0.3]]),
        False,
    ),
}
ALL = sorted(KINDS)
NATURAL = sorted(name for name, kind in KINDS.items() if kind.natural)


def shapes(num_outputs):
    return [(2, HIDDEN), (HIDDEN,), (HIDDEN, num_outputs), (num_outputs,)]


def split(theta, num_outputs):
    parts, start = [], 0
    for shape in shapes(num_outputs):
        size = int(np.prod(shape))
        parts.append(np.reshape(theta[start : start + size], shape))
        start += size
    return parts


def np_outputs(theta, num_outputs):
    w1, b1, w2, b2 = split(theta, num_outputs)
    return np.tanh(X @ w1 + b1) @ w2 + b2


def np_flat_inputs(kind, theta):
    return np.concatenate(
        [t.ravel() for t in kind.np_inputs(np_outputs(theta, kind.num_outputs))]
    )


def numeric_jacobian(func, theta, eps=1e-6):
    columns = []
    for j in range(theta.size):
        step = np.zeros_like(theta)
        step[j] = eps
        columns.append((func(theta + step) - func(theta - step)) / (2 * eps))
    return np.stack(columns, axis=1)


def numeric_hessian(func, x, eps=1e-4):
    size = x.size
    hessian = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            ei, ej = np.eye(size)[i] * eps, np.eye(size)[j] * eps
            hessian[i, j] = (
                func(x + ei + ej)
                - func(x + ei - ej)
                - func(x - ei + ej)
                + func(x - ei - ej)
            ) / (4 * eps**2)
    return hessian


def theta(num_outputs, seed=0):
    size = sum(int(np.prod(shape)) for shape in shapes(num_outputs))
    return np.random.RandomState(seed).randn(size) * 0.8


class Setup(object):
    """The TF graph for one loss kind: flat θ placeholder, sliced parameters."""

    def __init__(self, kind, with_targets=True):
        self.kind = kind
        self.theta_value = theta(kind.num_outputs)
        self.theta = tf.placeholder(tf.float64, [self.theta_value.size])
        self.params, start = [], 0
        for shape in shapes(kind.num_outputs):
            size = int(np.prod(shape))
            self.params.append(tf.reshape(self.theta[start : start + size], shape))
            start += size
        w1, b1, w2, b2 = self.params
        out = tf.matmul(tf.tanh(tf.matmul(tf.constant(X), w1) + b1), w2) + b2
        self.loss = kind.make_loss(out, with_targets)
        self.computer = cmvp.CurvatureMatrixVectorProductComputer(
            [self.loss], self.params
        )

        inputs = kind.np_inputs(np_outputs(self.theta_value, kind.num_outputs))
        self.jacobian = numeric_jacobian(
            lambda t: np_flat_inputs(kind, t), self.theta_value
        )
        self.fisher, self.factor = kind.fisher_and_factor(inputs)
        self.inner_size = self.factor.shape[1]
        self.inner_shape = (3, self.inner_size // 3)

    def run(self, fetches, theta=None):
        with tf.Session() as sess:
            return sess.run(
                fetches, {self.theta: self.theta_value if theta is None else theta}
            )

    def split(self, flat):
        return split(flat, self.kind.num_outputs)


def flat(values):
    return np.concatenate([np.ravel(v) for v in values])


def vector(setup, seed=1):
    return np.random.RandomState(seed).randn(setup.theta_value.size)


def inner_vector(setup, seed=2):
    return np.random.RandomState(seed).randn(setup.inner_size)
