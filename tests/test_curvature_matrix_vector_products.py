"""Tests for kfac.ops.curvature_matrix_vector_products.

The model is a tiny float64 tanh MLP `out = tanh(x W1 + b1) W2 + b2` whose
parameters are slices of one flat vector `θ`. The references are built in
numpy: the Jacobian `J = ∂(loss inputs)/∂θ` by central finite differences of a
numpy copy of the model, the per-loss Fisher `F`, factor `B` and Hessian `H`
as dense matrices over the flattened loss inputs (`H` by finite differences of
the numpy negative log-likelihood).
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from tolerances import assert_close

from kfac.ops import curvature_matrix_vector_products as cmvp
from kfac.ops import loss_functions as lf

_X = np.array([[0.3, -1.2], [1.0, 0.5], [-0.7, 0.8]])
_HIDDEN = 3
_VAR = 0.7
_MIN_VARIANCE = 0.5


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softplus(z):
    return np.log1p(np.exp(z))


def _block_diag(blocks):
    size = sum(block.shape[0] for block in blocks)
    out = np.zeros((size, size))
    start = 0
    for block in blocks:
        end = start + block.shape[0]
        out[start:end, start:end] = block
        start = end
    return out


class _Kind(object):
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
            return out[:, :2], tf.nn.softplus(out[:, 2:]) + _MIN_VARIANCE
        return out

    def np_inputs(self, out):
        if self.name == "normal_mean_variance":
            return [out[:, :2], _softplus(out[:, 2:]) + _MIN_VARIANCE]
        return [out]

    def make_loss(self, out, with_targets=True):
        inputs = self.tf_inputs(out)
        targets = self.targets if with_targets else None
        if self.name == "categorical":
            return lf.CategoricalLogitsNegativeLogProbLoss(inputs, targets=targets)
        if self.name == "normal_mean":
            return lf.NormalMeanNegativeLogProbLoss(inputs, var=_VAR, targets=targets)
        if self.name == "bernoulli":
            return lf.MultiBernoulliNegativeLogProbLoss(inputs, targets=targets)
        return lf.NormalMeanVarianceNegativeLogProbLoss(*inputs, targets=targets)

    def nll(self, flat_inputs):
        """Negative log-likelihood as a function of the flattened loss inputs."""
        y = self.targets
        if self.name == "categorical":
            logits = flat_inputs.reshape(-1, 3)
            return -np.sum(np.log(_softmax(logits))[np.arange(len(y)), y])
        if self.name == "normal_mean":
            mean = flat_inputs.reshape(y.shape)
            return np.sum((y - mean) ** 2 / (2 * _VAR) + 0.5 * np.log(2 * np.pi * _VAR))
        if self.name == "bernoulli":
            p = _sigmoid(flat_inputs.reshape(y.shape))
            return -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))
        mean, variance = np.split(flat_inputs, 2)
        mean, variance = mean.reshape(y.shape), variance.reshape(y.shape)
        return np.sum(
            (y - mean) ** 2 / (2 * variance) + 0.5 * np.log(2 * np.pi * variance)
        )

    def fisher_and_factor(self, inputs):
        """Dense `F` and `B` (`B Bᵀ = F`) over the flattened loss inputs."""
        if self.name == "categorical":
            p = _softmax(inputs[0])
            q = np.sqrt(p)
            fisher = _block_diag([np.diag(r) - np.outer(r, r) for r in p])
            factor = _block_diag([np.diag(s) - np.outer(r, s) for r, s in zip(p, q)])
            return fisher, factor
        if self.name == "normal_mean":
            size = inputs[0].size
            return np.eye(size) / _VAR, np.eye(size) / np.sqrt(_VAR)
        if self.name == "bernoulli":
            d = (_sigmoid(inputs[0]) * (1 - _sigmoid(inputs[0]))).ravel()
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


_KINDS = {
    "categorical": _Kind("categorical", 3, np.array([2, 0, 1]), True),
    "normal_mean": _Kind(
        "normal_mean", 2, np.array([[0.5, -1.0], [1.5, 0.2], [0.0, 0.3]]), True
    ),
    "bernoulli": _Kind(
        "bernoulli", 2, np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), True
    ),
    "normal_mean_variance": _Kind(
        "normal_mean_variance",
        4,
        np.array([[0.5, -1.0], [1.5, 0.2], [0.0, 0.3]]),
        False,
    ),
}
_ALL = sorted(_KINDS)
_NATURAL = sorted(name for name, kind in _KINDS.items() if kind.natural)


def _shapes(num_outputs):
    return [(2, _HIDDEN), (_HIDDEN,), (_HIDDEN, num_outputs), (num_outputs,)]


def _split(theta, num_outputs):
    parts, start = [], 0
    for shape in _shapes(num_outputs):
        size = int(np.prod(shape))
        parts.append(np.reshape(theta[start : start + size], shape))
        start += size
    return parts


def _np_outputs(theta, num_outputs):
    w1, b1, w2, b2 = _split(theta, num_outputs)
    return np.tanh(_X @ w1 + b1) @ w2 + b2


def _np_flat_inputs(kind, theta):
    return np.concatenate(
        [t.ravel() for t in kind.np_inputs(_np_outputs(theta, kind.num_outputs))]
    )


def _numeric_jacobian(func, theta, eps=1e-6):
    columns = []
    for j in range(theta.size):
        step = np.zeros_like(theta)
        step[j] = eps
        columns.append((func(theta + step) - func(theta - step)) / (2 * eps))
    return np.stack(columns, axis=1)


def _numeric_hessian(func, x, eps=1e-4):
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


def _theta(num_outputs, seed=0):
    size = sum(int(np.prod(shape)) for shape in _shapes(num_outputs))
    return np.random.RandomState(seed).randn(size) * 0.8


class _Setup(object):
    """The TF graph for one loss kind: flat θ placeholder, sliced parameters."""

    def __init__(self, kind, with_targets=True):
        self.kind = kind
        self.theta_value = _theta(kind.num_outputs)
        self.theta = tf.placeholder(tf.float64, [self.theta_value.size])
        self.params, start = [], 0
        for shape in _shapes(kind.num_outputs):
            size = int(np.prod(shape))
            self.params.append(tf.reshape(self.theta[start : start + size], shape))
            start += size
        w1, b1, w2, b2 = self.params
        out = tf.matmul(tf.tanh(tf.matmul(tf.constant(_X), w1) + b1), w2) + b2
        self.loss = kind.make_loss(out, with_targets)
        self.computer = cmvp.CurvatureMatrixVectorProductComputer(
            [self.loss], self.params
        )

        inputs = kind.np_inputs(_np_outputs(self.theta_value, kind.num_outputs))
        self.jacobian = _numeric_jacobian(
            lambda t: _np_flat_inputs(kind, t), self.theta_value
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
        return _split(flat, self.kind.num_outputs)


def _flat(values):
    return np.concatenate([np.ravel(v) for v in values])


def _vector(setup, seed=1):
    return np.random.RandomState(seed).randn(setup.theta_value.size)


def _inner_vector(setup, seed=2):
    return np.random.RandomState(seed).randn(setup.inner_size)


# ---------------------------------------------------------------------------
# Fisher.


@pytest.mark.parametrize("name", _ALL)
def test_multiply_fisher_is_jt_f_j(name, graph):
    setup = _Setup(_KINDS[name])
    v = _vector(setup)
    result = setup.run(setup.computer.multiply_fisher(setup.split(v)))
    assert [r.shape for r in result] == _shapes(setup.kind.num_outputs)
    expected = setup.jacobian.T @ setup.fisher @ setup.jacobian @ v
    assert_close(_flat(result), expected, rtol=1e-6)


@pytest.mark.parametrize("name", _ALL)
def test_multiply_fisher_factor_transpose_is_bt_j(name, graph):
    setup = _Setup(_KINDS[name])
    v = _vector(setup)
    result = setup.run(setup.computer.multiply_fisher_factor_transpose(setup.split(v)))
    assert isinstance(result, tuple) and len(result) == 1
    assert result[0].shape == setup.inner_shape
    expected = setup.factor.T @ setup.jacobian @ v
    assert_close(result[0].ravel(), expected, rtol=1e-6)


@pytest.mark.parametrize("name", _ALL)
def test_multiply_fisher_factor_is_jt_b(name, graph):
    setup = _Setup(_KINDS[name])
    u = _inner_vector(setup)
    result = setup.run(
        setup.computer.multiply_fisher_factor([u.reshape(setup.inner_shape)])
    )
    expected = setup.jacobian.T @ setup.factor @ u
    assert_close(_flat(result), expected, rtol=1e-6)


def test_multiply_fisher_factor_applies_b_not_its_transpose(graph):
    # The original computed Jᵀ Bᵀ u; for the non-symmetric categorical factor
    # that differs from the correct Jᵀ B u.
    setup = _Setup(_KINDS["categorical"])
    u = _inner_vector(setup)
    result = _flat(setup.run(setup.computer.multiply_fisher_factor([u.reshape(3, 3)])))
    correct = setup.jacobian.T @ setup.factor @ u
    transposed = setup.jacobian.T @ setup.factor.T @ u
    assert_close(result, correct, rtol=1e-6)
    assert np.abs(result - transposed).max() > 0.1 * np.abs(correct).max()


@pytest.mark.parametrize("name", _ALL)
def test_factor_products_are_adjoint(name, graph):
    # ⟨Bᵀ J v, u⟩ == ⟨v, Jᵀ B u⟩.
    setup = _Setup(_KINDS[name])
    v, u = _vector(setup), _inner_vector(setup)
    bt_j_v, jt_b_u = setup.run(
        [
            setup.computer.multiply_fisher_factor_transpose(setup.split(v)),
            setup.computer.multiply_fisher_factor([u.reshape(setup.inner_shape)]),
        ]
    )
    np.testing.assert_allclose(
        np.dot(bt_j_v[0].ravel(), u), np.dot(v, _flat(jt_b_u)), rtol=1e-10
    )


@pytest.mark.parametrize("name", _ALL)
def test_factor_after_factor_transpose_is_the_fisher(name, graph):
    setup = _Setup(_KINDS[name])
    vecs = setup.split(_vector(setup))
    inner = setup.computer.multiply_fisher_factor_transpose(vecs)
    composed, fisher = setup.run(
        [
            setup.computer.multiply_fisher_factor(inner),
            setup.computer.multiply_fisher(vecs),
        ]
    )
    assert_close(_flat(composed), _flat(fisher), rtol=1e-8)


# ---------------------------------------------------------------------------
# Generalized Gauss-Newton and Hessian.


@pytest.mark.parametrize("name", _NATURAL)
def test_multiply_ggn_is_jt_h_j(name, graph):
    kind = _KINDS[name]
    setup = _Setup(kind)
    v = _vector(setup)
    loss_inputs = _np_flat_inputs(kind, setup.theta_value)
    loss_hessian = _numeric_hessian(kind.nll, loss_inputs)
    result = setup.run(setup.computer.multiply_generalized_gauss_newton(setup.split(v)))
    expected = setup.jacobian.T @ loss_hessian @ setup.jacobian @ v
    assert_close(_flat(result), expected, rtol=1e-5)


@pytest.mark.parametrize("name", _NATURAL)
def test_ggn_factor_products(name, graph):
    setup = _Setup(_KINDS[name])
    v, u = _vector(setup), _inner_vector(setup)
    computer = setup.computer
    transpose, factor = setup.run(
        [
            computer.multiply_generalized_gauss_newton_factor_transpose(setup.split(v)),
            computer.multiply_generalized_gauss_newton_factor(
                [u.reshape(setup.inner_shape)]
            ),
        ]
    )
    assert_close(
        transpose[0].ravel(), setup.factor.T @ setup.jacobian @ v, rtol=1e-6
    )
    assert_close(
        _flat(factor), setup.jacobian.T @ setup.factor @ u, rtol=1e-6
    )


def test_ggn_of_mean_variance_loss_is_not_implemented(graph):
    setup = _Setup(_KINDS["normal_mean_variance"])
    vecs = setup.split(_vector(setup))
    with pytest.raises(NotImplementedError):
        setup.computer.multiply_generalized_gauss_newton(vecs)
    with pytest.raises(NotImplementedError):
        _ = setup.computer.generalized_gauss_newton_factor_inner_shapes


@pytest.mark.parametrize("name", _ALL)
def test_multiply_hessian(name, graph):
    kind = _KINDS[name]
    setup = _Setup(kind)
    v = _vector(setup)
    total_loss = setup.computer._total_loss
    gradient = tf.concat(
        [tf.reshape(g, [-1]) for g in tf.gradients(total_loss, setup.params)], 0
    )
    full_hessian = tf.hessians(total_loss, setup.theta)[0]
    product, hessian, loss_value, grad_value = setup.run(
        [
            setup.computer.multiply_hessian(setup.split(v)),
            full_hessian,
            total_loss,
            gradient,
        ]
    )
    assert_close(_flat(product), hessian @ v, rtol=1e-8)

    # Finite differences: the loss value and gradient against numpy, then the
    # Hessian-vector product against differences of that gradient.
    def np_loss(theta):
        return kind.nll(_np_flat_inputs(kind, theta))

    np.testing.assert_allclose(loss_value, np_loss(setup.theta_value), rtol=1e-10)
    np_gradient = _numeric_jacobian(
        lambda t: np.array([np_loss(t)]), setup.theta_value
    )[0]
    assert_close(grad_value, np_gradient, rtol=1e-6)
    eps = 1e-5
    plus = setup.run(gradient, setup.theta_value + eps * v)
    minus = setup.run(gradient, setup.theta_value - eps * v)
    assert_close(
        _flat(product), (plus - minus) / (2 * eps), rtol=1e-5
    )


def test_hessian_needs_targets(graph):
    setup = _Setup(_KINDS["categorical"], with_targets=False)
    with pytest.raises(ValueError, match="targets unspecified"):
        setup.computer.multiply_hessian(setup.split(_vector(setup)))


# ---------------------------------------------------------------------------
# Several losses, variables, shapes and errors.


def test_two_losses_add_up(graph):
    # A categorical head and a normal head on the same hidden layer.
    theta_value = _theta(5)
    theta = tf.placeholder(tf.float64, [theta_value.size])
    params, start = [], 0
    for shape in _shapes(5):
        size = int(np.prod(shape))
        params.append(tf.reshape(theta[start : start + size], shape))
        start += size
    w1, b1, w2, b2 = params
    out = tf.matmul(tf.tanh(tf.matmul(tf.constant(_X), w1) + b1), w2) + b2
    categorical, normal = _KINDS["categorical"], _KINDS["normal_mean"]
    losses = [categorical.make_loss(out[:, :3]), normal.make_loss(out[:, 3:])]
    computer = cmvp.CurvatureMatrixVectorProductComputer(losses, params)

    jacobian = _numeric_jacobian(lambda t: _np_outputs(t, 5).ravel(), theta_value)
    rows = np.arange(15).reshape(3, 5)
    jac_cat, jac_normal = jacobian[rows[:, :3].ravel()], jacobian[rows[:, 3:].ravel()]
    out_value = _np_outputs(theta_value, 5)
    fisher_cat, factor_cat = categorical.fisher_and_factor([out_value[:, :3]])
    fisher_normal, factor_normal = normal.fisher_and_factor([out_value[:, 3:]])
    v = np.random.RandomState(3).randn(theta_value.size)
    u_cat, u_normal = (
        np.random.RandomState(4).randn(2, 9)[0],
        np.random.RandomState(5).randn(6),
    )
    with tf.Session() as sess:
        fisher, transposes, factor, shapes = sess.run(
            [
                computer.multiply_fisher(_split(v, 5)),
                computer.multiply_fisher_factor_transpose(_split(v, 5)),
                computer.multiply_fisher_factor(
                    [u_cat.reshape(3, 3), u_normal.reshape(3, 2)]
                ),
                computer.fisher_factor_inner_shapes,
            ],
            {theta: theta_value},
        )
    expected = (
        jac_cat.T @ fisher_cat @ jac_cat + jac_normal.T @ fisher_normal @ jac_normal
    ) @ v
    assert_close(_flat(fisher), expected, rtol=1e-6)
    np.testing.assert_allclose(
        transposes[0].ravel(), factor_cat.T @ jac_cat @ v, rtol=1e-6
    )
    np.testing.assert_allclose(
        transposes[1].ravel(), factor_normal.T @ jac_normal @ v, rtol=1e-6
    )
    assert_close(
        _flat(factor),
        jac_cat.T @ factor_cat @ u_cat + jac_normal.T @ factor_normal @ u_normal,
        rtol=1e-6,
    )
    np.testing.assert_array_equal(shapes[0], [3, 3])
    np.testing.assert_array_equal(shapes[1], [3, 2])


def test_variables_as_wrt_tensors(tf_behavior, graph):
    kind = _KINDS["categorical"]
    theta_value = _theta(3)
    variables = [tf.Variable(value) for value in _split(theta_value, 3)]
    unused = tf.Variable(np.ones(2))
    w1, b1, w2, b2 = variables
    out = tf.matmul(tf.tanh(tf.matmul(tf.constant(_X), w1) + b1), w2) + b2
    computer = cmvp.CurvatureMatrixVectorProductComputer(
        [kind.make_loss(out)], variables + [unused]
    )
    v = _vector_like(theta_value)
    vecs = _split(v, 3) + [np.array([1.0, -1.0])]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        fisher, hessian = sess.run(
            [computer.multiply_fisher(vecs), computer.multiply_hessian(vecs)]
        )
    jacobian = _numeric_jacobian(lambda t: _np_flat_inputs(kind, t), theta_value)
    loss_fisher, _ = kind.fisher_and_factor([_np_outputs(theta_value, 3)])
    assert_close(
        _flat(fisher[:4]), jacobian.T @ loss_fisher @ jacobian @ v, rtol=1e-6
    )
    np.testing.assert_array_equal(fisher[4], [0.0, 0.0])
    np.testing.assert_array_equal(hessian[4], [0.0, 0.0])
    full_hessian = _numeric_hessian(
        lambda t: kind.nll(_np_flat_inputs(kind, t)), theta_value
    )
    assert_close(
        _flat(hessian[:4]), full_hessian @ v, rtol=1e-5
    )


def _vector_like(theta_value):
    return np.random.RandomState(6).randn(theta_value.size)


def test_inner_shapes(graph):
    setup = _Setup(_KINDS["normal_mean_variance"])
    fisher_shapes = setup.computer.fisher_factor_inner_shapes
    assert isinstance(fisher_shapes, tuple) and len(fisher_shapes) == 1
    np.testing.assert_array_equal(setup.run(fisher_shapes[0]), [3, 4])
    categorical = _Setup(_KINDS["categorical"])
    shapes = categorical.computer.generalized_gauss_newton_factor_inner_shapes
    np.testing.assert_array_equal(categorical.run(shapes[0]), [3, 3])


def test_argument_count_errors(graph):
    setup = _Setup(_KINDS["categorical"])
    vecs = setup.split(_vector(setup))
    with pytest.raises(ValueError, match="one entry per wrt tensor"):
        setup.computer.multiply_fisher(vecs[:3])
    with pytest.raises(ValueError, match="one entry per loss"):
        setup.computer.multiply_fisher_factor([np.zeros((3, 3))] * 2)
    with pytest.raises(ValueError, match="one entry per wrt tensor"):
        setup.computer.multiply_hessian(vecs + vecs)
