"""Tests for kfac.ops.loss_functions against independent numpy references.

The Fisher of every loss is rebuilt in numpy as `E_y[s sᵀ]`, with the score
`s = ∇_params log p(y)` taken by central finite differences of a numpy
log-density and the expectation computed by enumerating the outcomes
(categorical, Bernoulli) or by Gauss-Hermite quadrature (normal losses, exact
for the polynomial scores involved).
"""

import itertools
import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac.ops import loss_functions as lf

# ---------------------------------------------------------------------------
# numpy references.


def _log_softmax(logits):
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _sigmoid(x):
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


def _fisher_from_outcomes(log_prob, theta, outcomes):
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
        self._build = make  # (params tensor [B, P], targets, seed) -> loss
        self.log_prob = log_prob  # (theta_row, y_row) -> float
        self.outcomes = outcomes  # theta_row -> [(y_row, weight)]
        self.to_inputs = to_inputs  # [..., P] numpy -> value(s) like inputs
        self.from_inputs = from_inputs  # evaluated inputs-like -> [..., P]
        self.targets = targets
        self.sample_dtype = sample_dtype
        self.sample_shape = sample_shape

    def make(self, params=None, targets=None, seed=None):
        """The loss on `params` (default: `flat_params`), a `[..., P]` tensor."""
        if params is None:
            params = tf.constant(self.flat_params)
        return self._build(params, targets, seed)

    def fisher_rows(self):
        return [
            _fisher_from_outcomes(self.log_prob, row, self.outcomes(row))
            for row in self.flat_params
        ]

    def nll(self, targets):
        return -sum(self.log_prob(row, y) for row, y in zip(self.flat_params, targets))


def _identity(x):
    return x


_CAT_LOGITS = np.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]])
_BERN_LOGITS = np.array([[0.3, -1.2, 2.0], [-0.5, 0.8, 0.0]])
_MEAN = np.array([[0.5, -1.0], [2.0, 0.3]])
_VARIANCE = np.array([[0.4, 1.5], [0.9, 2.2]])
_VAR = 0.7


def _categorical_spec(onehot):
    targets = np.array([2, 0])
    if onehot:
        cls = lf.OnehotCategoricalLogitsNegativeLogProbLoss
        targets = np.eye(3)[targets]

        def log_prob(theta, y):
            return np.sum(y * _log_softmax(theta))

        def outcomes(theta):
            return list(zip(np.eye(3), np.exp(_log_softmax(theta))))
    else:
        cls = lf.CategoricalLogitsNegativeLogProbLoss

        def log_prob(theta, y):
            return _log_softmax(theta)[y]

        def outcomes(theta):
            return list(zip(range(3), np.exp(_log_softmax(theta))))

    return _Spec(
        "onehot" if onehot else "categorical",
        _CAT_LOGITS,
        lambda params, targets, seed: cls(params, targets=targets, seed=seed),
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
        p = _sigmoid(theta)
        return np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))

    def outcomes(theta):
        p = _sigmoid(theta)
        return [
            (np.array(y, float), np.prod(np.where(np.array(y) == 1, p, 1 - p)))
            for y in itertools.product([0, 1], repeat=theta.size)
        ]

    return _Spec(
        "bernoulli",
        _BERN_LOGITS,
        lambda params, targets, seed: lf.MultiBernoulliNegativeLogProbLoss(
            params, targets=targets, seed=seed
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
        return np.sum(_normal_log_density(y, theta, _VAR))

    def outcomes(theta):
        return _gauss_hermite_outcomes(theta, np.sqrt(_VAR) * np.ones_like(theta))

    return _Spec(
        "normal_mean",
        _MEAN,
        lambda params, targets, seed: lf.NormalMeanNegativeLogProbLoss(
            params, var=_VAR, targets=targets, seed=seed
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
    dim = _MEAN.shape[1]

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
        np.concatenate([_MEAN, _VARIANCE], axis=1),
        lambda params, targets, seed: lf.NormalMeanVarianceNegativeLogProbLoss(
            params[..., :dim], params[..., dim:], targets=targets, seed=seed
        ),
        log_prob,
        outcomes,
        to_inputs,
        from_inputs,
        np.array([[1.0, 0.5], [-0.5, 2.0]]),
        tf.float64,
        (2, 2),
    )


_SPECS = {
    spec.name: spec
    for spec in [
        _categorical_spec(False),
        _categorical_spec(True),
        _bernoulli_spec(),
        _normal_mean_spec(),
        _normal_mean_variance_spec(),
    ]
}
_ALL = sorted(_SPECS)
_NATURAL = ["bernoulli", "categorical", "normal_mean", "onehot"]


def _run(fetches, feed_dict=None):
    with tf.Session() as sess:
        return sess.run(fetches, feed_dict=feed_dict)


def _dense_factor(spec, loss, transpose=False):
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
    values = _run(columns)
    if not transpose:
        values = [spec.from_inputs(value) for value in values]
    return np.stack(values, axis=-1)  # [B, P, P]: [b, :, j] = M_b e_j


# ---------------------------------------------------------------------------
# Fisher and factor products.


@pytest.mark.parametrize("name", _ALL)
def test_multiply_fisher_matches_expected_score_outer_product(name, graph):
    spec = _SPECS[name]
    vector = np.random.RandomState(1).randn(*spec.flat_params.shape)
    result = spec.from_inputs(_run(spec.make().multiply_fisher(spec.to_inputs(vector))))
    expected = [fisher @ v for fisher, v in zip(spec.fisher_rows(), vector)]
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", _ALL)
def test_fisher_factor_times_its_transpose_is_the_fisher(name, graph):
    spec = _SPECS[name]
    factor = _dense_factor(spec, spec.make())
    for row_factor, fisher in zip(factor, spec.fisher_rows()):
        np.testing.assert_allclose(
            row_factor @ row_factor.T, fisher, rtol=1e-6, atol=1e-8
        )


@pytest.mark.parametrize("name", _ALL)
def test_fisher_factor_transpose_is_the_transposed_factor(name, graph):
    spec = _SPECS[name]
    loss = spec.make()
    factor = _dense_factor(spec, loss)
    transpose = _dense_factor(spec, loss, transpose=True)
    np.testing.assert_allclose(transpose, np.swapaxes(factor, 1, 2), atol=1e-12)


def test_categorical_factor_is_not_symmetric(graph):
    spec = _SPECS["categorical"]
    factor = _dense_factor(spec, spec.make())
    p = np.exp(_log_softmax(_CAT_LOGITS[0]))
    np.testing.assert_allclose(factor[0], np.diag(np.sqrt(p)) - np.outer(p, np.sqrt(p)))
    assert np.abs(factor[0] - factor[0].T).max() > 0.1


@pytest.mark.parametrize("name", _ALL)
def test_replicated_one_hot_is_a_column_of_the_factor(name, graph):
    spec = _SPECS[name]
    loss = spec.make()
    factor = _dense_factor(spec, loss)
    size = spec.flat_params.shape[1]
    columns = _run(
        [loss.multiply_fisher_factor_replicated_one_hot((j,)) for j in range(size)]
    )
    for j, column in enumerate(columns):
        np.testing.assert_allclose(
            spec.from_inputs(column), factor[:, :, j], atol=1e-12
        )


@pytest.mark.parametrize("name", _ALL)
def test_replicated_one_hot_index_errors(name, graph):
    loss = _SPECS[name].make()
    with pytest.raises(AssertionError, match="Length of index"):
        loss.multiply_fisher_factor_replicated_one_hot((0, 1))
    with pytest.raises(ValueError, match="must be in"):
        loss.multiply_fisher_factor_replicated_one_hot((7,))


@pytest.mark.parametrize("name", _NATURAL)
def test_natural_params_hessian_products_equal_the_fisher_products(name, graph):
    spec = _SPECS[name]
    loss = spec.make()
    vector = np.random.RandomState(2).randn(*spec.flat_params.shape)
    pairs = [
        (loss.multiply_hessian(vector), loss.multiply_fisher(vector)),
        (loss.multiply_hessian_factor(vector), loss.multiply_fisher_factor(vector)),
        (
            loss.multiply_hessian_factor_transpose(vector),
            loss.multiply_fisher_factor_transpose(vector),
        ),
        (
            loss.multiply_hessian_factor_replicated_one_hot((1,)),
            loss.multiply_fisher_factor_replicated_one_hot((1,)),
        ),
    ]
    for hessian_value, fisher_value in _run(pairs):
        np.testing.assert_allclose(hessian_value, fisher_value)
    assert (
        loss.hessian_factor_inner_static_shape == loss.fisher_factor_inner_static_shape
    )
    assert isinstance(loss.hessian_factor_inner_static_shape, tf.TensorShape)


@pytest.mark.parametrize("name", _NATURAL)
def test_natural_params_fisher_is_the_hessian_of_the_loss(name, graph):
    # For natural parameters the Hessian of the NLL w.r.t. them is the Fisher,
    # whatever the targets: check against tf.hessians of evaluate().
    spec = _SPECS[name]
    params = tf.constant(spec.flat_params)
    loss = spec.make(params, targets=spec.targets)
    hessian = _run(tf.hessians(loss.evaluate(), params)[0])
    num_rows, size = spec.flat_params.shape
    for b, fisher in enumerate(spec.fisher_rows()):
        np.testing.assert_allclose(hessian[b, :, b, :], fisher, rtol=1e-6, atol=1e-8)
        for other in range(num_rows):
            if other != b:
                np.testing.assert_allclose(hessian[b, :, other, :], 0.0)


def test_normal_mean_variance_has_no_hessian(graph):
    loss = _SPECS["normal_mean_variance"].make()
    vecs = (np.ones((2, 2)), np.ones((2, 2)))
    for call in (
        lambda: loss.multiply_hessian(vecs),
        lambda: loss.multiply_hessian_factor(np.ones((2, 4))),
        lambda: loss.multiply_hessian_factor_transpose(vecs),
        lambda: loss.multiply_hessian_factor_replicated_one_hot((0,)),
        lambda: loss.hessian_factor_inner_shape,
        lambda: loss.hessian_factor_inner_static_shape,
    ):
        with pytest.raises(NotImplementedError):
            call()


def test_normal_mean_variance_tuple_and_concat_formats(graph):
    loss = _SPECS["normal_mean_variance"].make()
    mean_vec, var_vec = (
        np.array([[1.0, 2.0], [3.0, 4.0]]),
        np.array([[5.0, 6.0], [7.0, 8.0]]),
    )
    fisher, factor_t, factor = _run(
        [
            loss.multiply_fisher((mean_vec, var_vec)),
            loss.multiply_fisher_factor_transpose((mean_vec, var_vec)),
            loss.multiply_fisher_factor(np.concatenate([mean_vec, var_vec], axis=1)),
        ]
    )
    assert isinstance(fisher, tuple) and isinstance(factor, tuple)
    np.testing.assert_allclose(fisher[0], mean_vec / _VARIANCE)
    np.testing.assert_allclose(fisher[1], var_vec / (2 * _VARIANCE**2))
    np.testing.assert_allclose(
        factor_t,
        np.concatenate(
            [mean_vec / np.sqrt(_VARIANCE), var_vec / (np.sqrt(2) * _VARIANCE)], axis=1
        ),
    )
    np.testing.assert_allclose(factor[0], mean_vec / np.sqrt(_VARIANCE))
    np.testing.assert_allclose(factor[1], var_vec / (np.sqrt(2) * _VARIANCE))


def test_normal_mean_variance_requires_2d_inputs(graph):
    with pytest.raises(AssertionError, match="2-D mean"):
        lf.NormalMeanVarianceNegativeLogProbLoss(tf.zeros([3]), tf.ones([3, 1]))
    with pytest.raises(ValueError, match="2-D variance"):
        lf.NormalMeanVarianceNegativeLogProbLoss(tf.zeros([3, 1]), tf.ones([1, 3, 1]))


def test_categorical_fisher_broadcasts_over_leading_dims(graph):
    # A single logits vector multiplied by a vector, a [1, C] and a [4, C] stack.
    logits = np.array([1.0, 2.0, 3.0])
    loss = lf.CategoricalLogitsNegativeLogProbLoss(logits)
    p = np.exp(_log_softmax(logits))
    fisher = np.diag(p) - np.outer(p, p)
    vector = np.array([1.0, 2.0, 3.0])
    inputs = [
        vector,
        vector.reshape(1, -1),
        np.stack([vector, 2 * vector, -vector, vector]),
    ]
    for vec, result in zip(inputs, _run([loss.multiply_fisher(v) for v in inputs])):
        assert result.shape == vec.shape
        np.testing.assert_allclose(result, vec @ fisher)


def test_categorical_fisher_batch_of_logits(graph):
    logits = np.array([[1.0, 2.0, 3.0], [4.0, 6.0, 8.0]])
    vector = np.array([[1.0, 2.0, 3.0], [5.0, 3.0, 1.0]])
    loss = lf.CategoricalLogitsNegativeLogProbLoss(logits)
    result = _run(loss.multiply_fisher(vector))
    for row in range(2):
        p = np.exp(_log_softmax(logits[row]))
        np.testing.assert_allclose(
            result[row], (np.diag(p) - np.outer(p, p)) @ vector[row]
        )


def test_float32_params_accept_float64_numpy_vectors(graph):
    loss = lf.MultiBernoulliNegativeLogProbLoss(tf.constant([[0.0, 1.0]], tf.float32))
    result = loss.multiply_fisher(np.array([[1.0, 2.0]]))
    assert result.dtype == tf.float32
    p = _sigmoid(np.array([0.0, 1.0]))
    np.testing.assert_allclose(_run(result)[0], p * (1 - p) * [1.0, 2.0], rtol=1e-6)


def test_fisher_is_finite_for_extreme_logits(graph):
    logits = np.array([[60.0, -60.0, 0.0]])
    bernoulli = lf.MultiBernoulliNegativeLogProbLoss(logits)
    categorical = lf.CategoricalLogitsNegativeLogProbLoss(logits)
    values = _run(
        [
            bernoulli.multiply_fisher_factor(np.ones((1, 3))),
            categorical.multiply_fisher_factor(np.ones((1, 3))),
            bernoulli.evaluate_on_sample(1),
            categorical.evaluate_on_sample(1),
        ]
    )
    for value in values:
        assert np.all(np.isfinite(value))
    np.testing.assert_allclose(
        values[0], [[math.exp(-30), math.exp(-30), 0.5]], rtol=1e-6
    )


# ---------------------------------------------------------------------------
# Values, targets and gradients.


@pytest.mark.parametrize("name", _ALL)
def test_evaluate_is_the_summed_negative_log_likelihood(name, graph):
    spec = _SPECS[name]
    value = _run(spec.make(targets=spec.targets).evaluate())
    np.testing.assert_allclose(value, spec.nll(spec.targets), rtol=1e-10)


def test_evaluate_anchors(graph):
    categorical = lf.CategoricalLogitsNegativeLogProbLoss(
        tf.constant([[1.0, 2.0], [3.0, 4.0]]), targets=tf.constant([0, 1])
    )
    normal = lf.NormalMeanNegativeLogProbLoss(
        tf.constant([[1.0, 2.0], [3.0, 4.0]]),
        var=4.0,
        targets=tf.constant([[3.0, 1.0], [4.0, 2.0]]),
    )
    values = _run([categorical.evaluate(), normal.evaluate()])
    np.testing.assert_allclose(values, [1.6265233, 7.6983433], rtol=1e-6)


def test_onehot_evaluate_with_soft_targets(graph):
    targets = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    loss = lf.OnehotCategoricalLogitsNegativeLogProbLoss(_CAT_LOGITS, targets=targets)
    np.testing.assert_allclose(
        _run(loss.evaluate()), -np.sum(targets * _log_softmax(_CAT_LOGITS))
    )


@pytest.mark.parametrize("name", _ALL)
def test_evaluate_without_targets_raises(name, graph):
    loss = _SPECS[name].make()
    assert loss.targets is None
    with pytest.raises(ValueError, match="targets unspecified"):
        loss.evaluate()


def test_targets_property_returns_the_constructor_value(graph):
    targets = np.array([1, 0])
    loss = lf.CategoricalLogitsNegativeLogProbLoss(_CAT_LOGITS, targets=targets)
    assert loss.targets is targets
    assert loss.inputs is loss.params


def test_evaluate_stops_gradients_to_targets(graph):
    mean = tf.constant(_MEAN)
    targets = tf.constant(np.ones((2, 2))) * 2.0
    loss = lf.NormalMeanNegativeLogProbLoss(mean, var=_VAR, targets=targets)
    grad_targets, grad_mean = tf.gradients(loss.evaluate(), [targets, mean])
    assert grad_targets is None
    np.testing.assert_allclose(_run(grad_mean), (_MEAN - 2.0) / _VAR)


def test_tensor_inputs_keep_their_identity(graph):
    logits = tf.constant(_CAT_LOGITS)
    mean, variance = tf.constant(_MEAN), tf.constant(_VARIANCE)
    assert lf.CategoricalLogitsNegativeLogProbLoss(logits).inputs is logits
    assert lf.MultiBernoulliNegativeLogProbLoss(logits).inputs is logits
    assert lf.NormalMeanNegativeLogProbLoss(mean).inputs is mean
    pair = lf.NormalMeanVarianceNegativeLogProbLoss(mean, variance).inputs
    assert pair[0] is mean and pair[1] is variance


def test_variable_logits(tf_behavior, graph):
    logits = tf.Variable(_CAT_LOGITS)
    loss = lf.CategoricalLogitsNegativeLogProbLoss(logits, targets=np.array([2, 0]))
    grad = tf.gradients(loss.evaluate(), logits)[0]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        value, grad = sess.run([loss.evaluate(), grad])
    p = np.exp(_log_softmax(_CAT_LOGITS))
    np.testing.assert_allclose(value, -_log_softmax(_CAT_LOGITS)[[0, 1], [2, 0]].sum())
    np.testing.assert_allclose(grad, p - np.eye(3)[[2, 0]])


@pytest.mark.parametrize("name", _ALL)
def test_evaluate_on_sample_uses_the_default_seed(name, graph):
    spec = _SPECS[name]
    loss = spec.make(seed=1234)
    # Ops with the same op-level seed draw the same numbers.
    sample = loss.sample(1234)
    on_default, on_explicit = loss.evaluate_on_sample(), loss.evaluate_on_sample(1234)
    sample, on_default, on_explicit = _run([sample, on_default, on_explicit])
    assert on_default == on_explicit
    np.testing.assert_allclose(on_default, spec.nll(sample), rtol=1e-10)


def test_evaluate_on_sample_gradient_skips_the_sample(graph):
    # d/dmean of the NLL at a fixed sample y is −(y − mean)/var; if the gradient
    # flowed through y = mean + σε it would vanish.
    mean = tf.constant(_MEAN)
    loss = lf.NormalMeanNegativeLogProbLoss(mean, var=_VAR, seed=5)
    sample = loss.sample(5)
    grad = tf.gradients(loss.evaluate_on_sample(), mean)[0]
    sample, grad = _run([sample, grad])
    np.testing.assert_allclose(grad, -(sample - _MEAN) / _VAR)
    assert np.abs(grad).max() > 1e-3


# ---------------------------------------------------------------------------
# Sampling.


@pytest.mark.parametrize("name", _ALL)
def test_sample_shape_and_dtype(name, graph):
    spec = _SPECS[name]
    sample = spec.make().sample(3)
    assert sample.dtype == spec.sample_dtype
    assert _run(sample).shape == spec.sample_shape


def _tiled(row, num):
    return tf.tile(tf.constant(row[np.newaxis]), [num, 1])


def test_categorical_sample_frequencies(graph):
    num = 20000
    logits = np.array([0.5, -1.0, 2.0])
    ids, onehot = _run(
        [
            lf.CategoricalLogitsNegativeLogProbLoss(_tiled(logits, num)).sample(7),
            lf.OnehotCategoricalLogitsNegativeLogProbLoss(_tiled(logits, num)).sample(
                8
            ),
        ]
    )
    p = np.exp(_log_softmax(logits))
    np.testing.assert_allclose(np.bincount(ids, minlength=3) / num, p, atol=0.015)
    np.testing.assert_array_equal(onehot.sum(axis=1), 1.0)
    np.testing.assert_allclose(onehot.mean(axis=0), p, atol=0.015)


def test_bernoulli_sample_frequencies(graph):
    num = 20000
    logits = np.array([0.3, -1.2, 2.0])
    sample = _run(lf.MultiBernoulliNegativeLogProbLoss(_tiled(logits, num)).sample(9))
    assert set(np.unique(sample)) <= {0, 1}
    np.testing.assert_allclose(sample.mean(axis=0), _sigmoid(logits), atol=0.015)


def test_normal_sample_moments(graph):
    num = 20000
    mean, variance = np.array([0.5, -1.0]), np.array([0.4, 2.0])
    normal, normal_mv = _run(
        [
            lf.NormalMeanNegativeLogProbLoss(_tiled(mean, num), var=0.4).sample(10),
            lf.NormalMeanVarianceNegativeLogProbLoss(
                _tiled(mean, num), _tiled(variance, num)
            ).sample(11),
        ]
    )
    np.testing.assert_allclose(normal.mean(axis=0), mean, atol=0.03)
    np.testing.assert_allclose(normal.var(axis=0), [0.4, 0.4], rtol=0.05)
    np.testing.assert_allclose(normal_mv.mean(axis=0), mean, atol=0.05)
    np.testing.assert_allclose(normal_mv.var(axis=0), variance, rtol=0.05)


@pytest.mark.parametrize("name", _ALL)
def test_monte_carlo_fisher_from_sampled_gradients(name, graph):
    # The "gradients" estimation mode: per-row gradients of evaluate_on_sample
    # have second moment F (rows share the parameters of row 0 of the spec).
    spec = _SPECS[name]
    num = 4000
    row = spec.flat_params[0]
    loss = spec.make(_tiled(row, num), seed=1)
    grads = tf.gradients(loss.evaluate_on_sample(), tf.nest.flatten(loss.inputs))
    grads = spec.from_inputs(_run(grads)) if len(grads) > 1 else _run(grads[0])
    products = grads[:, :, np.newaxis] * grads[:, np.newaxis, :]
    empirical = products.mean(axis=0)
    standard_error = products.std(axis=0) / math.sqrt(num)
    fisher = _fisher_from_outcomes(spec.log_prob, row, spec.outcomes(row))
    # Within 4 standard errors of the Monte Carlo estimate, entry by entry.
    np.testing.assert_array_less(np.abs(empirical - fisher), 4 * standard_error + 1e-9)


def test_sampling_from_non_finite_logits_stays_in_range(graph):
    logits = np.array(
        [
            [np.nan, np.nan, np.nan],
            [-np.inf, -np.inf, -np.inf],
            [np.inf, 0.0, 0.0],
            [np.nan, 0.0, 1.0],
            [-np.inf, 0.0, -np.inf],
        ]
    )
    ids, onehot, bern, normal, on_sample = _run(
        [
            lf.CategoricalLogitsNegativeLogProbLoss(tf.tile(logits, [50, 1])).sample(1),
            lf.OnehotCategoricalLogitsNegativeLogProbLoss(logits).sample(2),
            lf.MultiBernoulliNegativeLogProbLoss(logits).sample(3),
            lf.NormalMeanNegativeLogProbLoss(logits).sample(4),
            lf.CategoricalLogitsNegativeLogProbLoss(logits).evaluate_on_sample(5),
        ]
    )
    assert ids.min() >= 0 and ids.max() <= 2
    # Valid rows keep their distribution: a row with only class 1 finite.
    np.testing.assert_array_equal(ids.reshape(50, 5)[:, 4], 1)
    np.testing.assert_array_equal(onehot.sum(axis=1), 1.0)
    assert set(np.unique(bern)) <= {0, 1}
    assert np.all(np.isfinite(normal))
    # The loss itself still reports the problem (the optimizer skips the step).
    assert not np.isfinite(on_sample)


# ---------------------------------------------------------------------------
# Shapes and insert_slice_in_zeros.


def test_inner_shapes(graph):
    logits = tf.placeholder(tf.float32, [None, 3])
    mean, variance = (
        tf.placeholder(tf.float32, [None, 2]),
        tf.placeholder(tf.float32, [None, 2]),
    )
    categorical = lf.CategoricalLogitsNegativeLogProbLoss(logits)
    bernoulli = lf.MultiBernoulliNegativeLogProbLoss(logits)
    normal = lf.NormalMeanNegativeLogProbLoss(mean)
    normal_mv = lf.NormalMeanVarianceNegativeLogProbLoss(mean, variance)
    for loss in (categorical, bernoulli):
        assert loss.fisher_factor_inner_static_shape.as_list() == [None, 3]
    assert normal.fisher_factor_inner_static_shape.as_list() == [None, 2]
    assert normal_mv.fisher_factor_inner_static_shape.as_list() == [None, 4]
    feed = {logits: np.zeros((5, 3)), mean: np.zeros((5, 2)), variance: np.ones((5, 2))}
    shapes = _run(
        [
            categorical.fisher_factor_inner_shape,
            categorical.hessian_factor_inner_shape,
            bernoulli.fisher_factor_inner_shape,
            normal.fisher_factor_inner_shape,
            normal_mv.fisher_factor_inner_shape,
        ],
        feed,
    )
    expected = [[5, 3], [5, 3], [5, 3], [5, 2], [5, 4]]
    for shape, want in zip(shapes, expected):
        np.testing.assert_array_equal(shape, want)


def test_insert_slice_in_zeros_example(graph):
    result = lf.insert_slice_in_zeros(tf.constant([[[1, 2]], [[3, 4]]]), 1, 2, 0)
    np.testing.assert_array_equal(_run(result), [[[1, 2], [0, 0]], [[3, 4], [0, 0]]])
    result = lf.insert_slice_in_zeros(np.array([[5.0], [6.0]]), 1, 3, 2)
    np.testing.assert_array_equal(_run(result), [[0, 0, 5], [0, 0, 6]])


def test_insert_slice_in_zeros_errors(graph):
    with pytest.raises(ValueError, match=r"shape\[1\] to be 1"):
        lf.insert_slice_in_zeros(tf.zeros([2, 2]), 1, 3, 0)
    with pytest.raises(ValueError, match="position"):
        lf.insert_slice_in_zeros(tf.zeros([2, 1]), 1, 3, 3)


def test_abstract_classes_cannot_be_instantiated():
    for cls in (
        lf.LossFunction,
        lf.NegativeLogProbLoss,
        lf.NaturalParamsNegativeLogProbLoss,
        lf.DistributionNegativeLogProbLoss,
    ):
        with pytest.raises(TypeError):
            cls()
