"""Independent numpy references for the tests of kfac.ops.loss_functions.

The Fisher of every loss is rebuilt in numpy as `E_y[s sᵀ]`, with the score
`s = ∇_params log p(y)` taken by central finite differences of a numpy
log-density and the expectation computed by enumerating the outcomes
(categorical, Bernoulli) or by Gauss-Hermite quadrature (normal losses, exact
for the polynomial scores involved). `SPECS` holds one `_Spec` per loss kind.
"""

import itertools
import math

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops import loss_functions as lf

# ---------------------------------------------------------------------------
# numpy references.


def log_softmax(logits):
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _normal_log_density(y, mean, variance):
    return -0.5 * (y - mean) ** 2 / variance - 0.5 * np.log(2 * np.pi * variance)


def _numeric_grad(func, x, eps=1e-6):
    grad = np.zeros_like(x)
    for i in range(x.size):
        step = np.zeros_like(x)
        step.flat[i] = eps
        grad.flat[i] = (func(x + step) - func(x - step)) / (2 * eps)
    return grad


def fisher_from_outcomes(log_prob, theta, outcomes):
    """`Σ_k w_k s_k s_kᵀ`, `s_k = ∇_θ log_prob(θ, y_k)` by finite differences."""
    fisher = np.zeros((theta.size, theta.size))
    for y, weight in outcomes:
        score = _numeric_grad(lambda t, y=y: log_prob(t, y), theta)
        fisher += weight * np.outer(score, score)
    return fisher


def _gauss_hermite_outcomes(means, stds, num_nodes=12):
    """Tensor-product quadrature for independent normals: list of (y, weight)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    weights = weights / math.sqrt(2 * math.pi)
    outcomes = []
    for idx in itertools.product(range(num_nodes), repeat=len(means)):
        idx = np.array(idx)
        outcomes.append((means + stds * nodes[idx], np.prod(weights[idx])))
    return outcomes


class _Spec(object):
    """One loss kind: numpy parameters (one flat row `θ_b` per case) and references.

    `P` is the number of parameters per case, which is also the size of the
    factor's inner vectors for every loss here.
    """

    def __init__(
        self,
        name,
        flat_params,
        make,
        log_prob,
        outcomes,
        to_inputs,
        from_inputs,
        targets,
        sample_dtype,
        sample_shape,
    ):
        self.name = name
        self.flat_params = flat_params  # [B, P]
        self._build = make  # (params tensor [B, P], targets, seed, weights) -> loss
        self.log_prob = log_prob  # (theta_row, y_row) -> float
        self.outcomes = outcomes  # theta_row -> [(y_row, weight)]
        self.to_inputs = to_inputs  # [..., P] numpy -> value(s) like inputs
        self.from_inputs = from_inputs  # evaluated inputs-like -> [..., P]
        self.targets = targets
        self.sample_dtype = sample_dtype
        self.sample_shape = sample_shape

    def make(self, params=None, targets=None, seed=None, weights=None):
        """The loss on `params` (default: `flat_params`), a `[..., P]` tensor."""
        if params is None:
            params = tf.constant(self.flat_params)
        return self._build(params, targets, seed, weights)

    def fisher_rows(self):
        return [
            fisher_from_outcomes(self.log_prob, row, self.outcomes(row))
            for row in self.flat_params
        ]

    def nll(self, targets):
        return -sum(self.log_prob(row, y) for row, y in zip(self.flat_params, targets))


def _identity(x):
    return x


CAT_LOGITS = np.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]])
_BERN_LOGITS = np.array([[0.3, -1.2, 2.0], [-0.5, 0.8, 0.0]])
MEAN = np.array([[0.5, -1.0], [2.0, 0.3]])
VARIANCE = np.array([[0.4, 1.5], [0.9, 2.2]])
VAR = 0.7


def _categorical_spec(onehot):
    targets = np.array([2, 0])
    if onehot:
        cls = lf.OnehotCategoricalLogitsNegativeLogProbLoss
        targets = np.eye(3)[targets]

        def log_prob(theta, y):
            return np.sum(y * log_softmax(theta))

        def outcomes(theta):
            return list(zip(np.eye(3), np.exp(log_softmax(theta))))
    else:
        cls = lf.CategoricalLogitsNegativeLogProbLoss

        def log_prob(theta, y):
            return log_softmax(theta)[y]

        def outcomes(theta):
            return list(zip(range(3), np.exp(log_softmax(theta))))

    return _Spec(
        "onehot" if onehot else "categorical",
        CAT_LOGITS,
        lambda params, targets, seed, weights: cls(
            params, targets=targets, seed=seed, weights=weights
        ),
        log_prob,
        outcomes,
        _identity,
        _identity,
        targets,
        tf.float64 if onehot else tf.int32,
        (2, 3) if onehot else (2,),
    )


def _bernoulli_spec():
    def log_prob(theta, y):
        p = sigmoid(theta)
        return np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))

    def outcomes(theta):
        p = sigmoid(theta)
        return [
            (np.array(y, float), np.prod(np.where(np.array(y) == 1, p, 1 - p)))
            for y in itertools.product([0, 1], repeat=theta.size)
        ]

    return _Spec(
        "bernoulli",
        _BERN_LOGITS,
        lambda params, targets, seed, weights: lf.MultiBernoulliNegativeLogProbLoss(
            params, targets=targets, seed=seed, weights=weights
        ),
        log_prob,
        outcomes,
        _identity,
        _identity,
        np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]),
        tf.int32,
        (2, 3),
    )


def _normal_mean_spec():
    def log_prob(theta, y):
        return np.sum(_normal_log_density(y, theta, VAR))

    def outcomes(theta):
        return _gauss_hermite_outcomes(theta, np.sqrt(VAR) * np.ones_like(theta))

    return _Spec(
        "normal_mean",
        MEAN,
        lambda params, targets, seed, weights: lf.NormalMeanNegativeLogProbLoss(
            params, var=VAR, targets=targets, seed=seed, weights=weights
        ),
        log_prob,
        outcomes,
        _identity,
        _identity,
        np.array([[1.0, 0.5], [-0.5, 2.0]]),
        tf.float64,
        (2, 2),
    )


def _normal_mean_variance_spec():
    dim = MEAN.shape[1]

    def log_prob(theta, y):
        return np.sum(_normal_log_density(y, theta[:dim], theta[dim:]))

    def outcomes(theta):
        return _gauss_hermite_outcomes(theta[:dim], np.sqrt(theta[dim:]))

    def to_inputs(flat):
        return flat[..., :dim], flat[..., dim:]

    def from_inputs(values):
        return np.concatenate(values, axis=-1)

    return _Spec(
        "normal_mean_variance",
        np.concatenate([MEAN, VARIANCE], axis=1),
        lambda params, targets, seed, weights: lf.NormalMeanVarianceNegativeLogProbLoss(
            params[..., :dim],
            params[..., dim:],
            targets=targets,
            seed=seed,
            weights=weights,
        ),
        log_prob,
        outcomes,
        to_inputs,
        from_inputs,
        np.array([[1.0, 0.5], [-0.5, 2.0]]),
        tf.float64,
        (2, 2),
    )


SPECS = {
    spec.name: spec
    for spec in [
        _categorical_spec(False),
        _categorical_spec(True),
        _bernoulli_spec(),
        _normal_mean_spec(),
        _normal_mean_variance_spec(),
    ]
}
ALL = sorted(SPECS)
NATURAL = ["bernoulli", "categorical", "normal_mean", "onehot"]


def run(fetches, feed_dict=None):
    with tf.Session() as sess:
        return sess.run(fetches, feed_dict=feed_dict)


def dense_factor(spec, loss, transpose=False):
    """Per-row dense `B` (or `Bᵀ`) built by applying the product to basis vectors."""
    num_rows, size = spec.flat_params.shape
    columns = []
    for j in range(size):
        basis = np.zeros((num_rows, size))
        basis[:, j] = 1.0
        if transpose:
            columns.append(loss.multiply_fisher_factor_transpose(spec.to_inputs(basis)))
        else:
            columns.append(loss.multiply_fisher_factor(basis))
    values = run(columns)
    if not transpose:
        values = [spec.from_inputs(value) for value in values]
    return np.stack(values, axis=-1)  # [B, P, P]: [b, :, j] = M_b e_j
