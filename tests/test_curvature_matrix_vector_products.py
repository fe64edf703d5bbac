"""Tests for kfac.ops.curvature_matrix_vector_products.

The model is a tiny float64 tanh MLP `out = tanh(x W1 + b1) W2 + b2` whose
parameters are slices of one flat vector `θ`. The references are built in
numpy: the Jacobian `J = ∂(loss inputs)/∂θ` by central finite differences of a
numpy copy of the model, the per-loss Fisher `F`, factor `B` and Hessian `H`
as dense matrices over the flattened loss inputs (`H` by finite differences of
the numpy negative log-likelihood).
"""

import curvature_references as references
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from tolerances import assert_close

from kfac.ops import curvature_matrix_vector_products as cmvp

# ---------------------------------------------------------------------------
# Fisher.


@pytest.mark.parametrize("name", references.ALL)
def test_multiply_fisher_is_jt_f_j(name, graph):
    setup = references.Setup(references.KINDS[name])
    v = references.vector(setup)
    result = setup.run(setup.computer.multiply_fisher(setup.split(v)))
    assert [r.shape for r in result] == references.shapes(setup.kind.num_outputs)
    expected = setup.jacobian.T @ setup.fisher @ setup.jacobian @ v
    assert_close(references.flat(result), expected, rtol=1e-6)


@pytest.mark.parametrize("name", references.ALL)
def test_multiply_fisher_factor_transpose_is_bt_j(name, graph):
    setup = references.Setup(references.KINDS[name])
    v = references.vector(setup)
    result = setup.run(setup.computer.multiply_fisher_factor_transpose(setup.split(v)))
    assert isinstance(result, tuple) and len(result) == 1
    assert result[0].shape == setup.inner_shape
    expected = setup.factor.T @ setup.jacobian @ v
    assert_close(result[0].ravel(), expected, rtol=1e-6)


@pytest.mark.parametrize("name", references.ALL)
def test_multiply_fisher_factor_is_jt_b(name, graph):
    setup = references.Setup(references.KINDS[name])
    u = references.inner_vector(setup)
    result = setup.run(
        setup.computer.multiply_fisher_factor([u.reshape(setup.inner_shape)])
    )
    expected = setup.jacobian.T @ setup.factor @ u
    assert_close(references.flat(result), expected, rtol=1e-6)


def test_multiply_fisher_factor_applies_b_not_its_transpose(graph):
    # The original computed Jᵀ Bᵀ u; for the non-symmetric categorical factor
    # that differs from the correct Jᵀ B u.
    setup = references.Setup(references.KINDS["categorical"])
    u = references.inner_vector(setup)
    result = references.flat(
        setup.run(setup.computer.multiply_fisher_factor([u.reshape(3, 3)]))
    )
    correct = setup.jacobian.T @ setup.factor @ u
    transposed = setup.jacobian.T @ setup.factor.T @ u
    assert_close(result, correct, rtol=1e-6)
    assert np.abs(result - transposed).max() > 0.1 * np.abs(correct).max()


@pytest.mark.parametrize("name", references.ALL)
def test_factor_products_are_adjoint(name, graph):
    # ⟨Bᵀ J v, u⟩ == ⟨v, Jᵀ B u⟩.
    setup = references.Setup(references.KINDS[name])
    v, u = references.vector(setup), references.inner_vector(setup)
    bt_j_v, jt_b_u = setup.run(
        [
            setup.computer.multiply_fisher_factor_transpose(setup.split(v)),
            setup.computer.multiply_fisher_factor([u.reshape(setup.inner_shape)]),
        ]
    )
    np.testing.assert_allclose(
        np.dot(bt_j_v[0].ravel(), u), np.dot(v, references.flat(jt_b_u)), rtol=1e-10
    )


@pytest.mark.parametrize("name", references.ALL)
def test_factor_after_factor_transpose_is_the_fisher(name, graph):
    setup = references.Setup(references.KINDS[name])
    vecs = setup.split(references.vector(setup))
    inner = setup.computer.multiply_fisher_factor_transpose(vecs)
    composed, fisher = setup.run(
        [
            setup.computer.multiply_fisher_factor(inner),
            setup.computer.multiply_fisher(vecs),
        ]
    )
    assert_close(references.flat(composed), references.flat(fisher), rtol=1e-8)


# ---------------------------------------------------------------------------
# Generalized Gauss-Newton and Hessian.


@pytest.mark.parametrize("name", references.NATURAL)
def test_multiply_ggn_is_jt_h_j(name, graph):
    kind = references.KINDS[name]
    setup = references.Setup(kind)
    v = references.vector(setup)
    loss_inputs = references.np_flat_inputs(kind, setup.theta_value)
    loss_hessian = references.numeric_hessian(kind.nll, loss_inputs)
    result = setup.run(setup.computer.multiply_generalized_gauss_newton(setup.split(v)))
    expected = setup.jacobian.T @ loss_hessian @ setup.jacobian @ v
    assert_close(references.flat(result), expected, rtol=1e-5)


@pytest.mark.parametrize("name", references.NATURAL)
def test_ggn_factor_products(name, graph):
    setup = references.Setup(references.KINDS[name])
    v, u = references.vector(setup), references.inner_vector(setup)
    computer = setup.computer
    transpose, factor = setup.run(
        [
            computer.multiply_generalized_gauss_newton_factor_transpose(setup.split(v)),
            computer.multiply_generalized_gauss_newton_factor(
                [u.reshape(setup.inner_shape)]
            ),
        ]
    )
    assert_close(transpose[0].ravel(), setup.factor.T @ setup.jacobian @ v, rtol=1e-6)
    assert_close(
        references.flat(factor), setup.jacobian.T @ setup.factor @ u, rtol=1e-6
    )


def test_ggn_of_mean_variance_loss_is_not_implemented(graph):
    setup = references.Setup(references.KINDS["normal_mean_variance"])
    vecs = setup.split(references.vector(setup))
    with pytest.raises(NotImplementedError):
        setup.computer.multiply_generalized_gauss_newton(vecs)
    with pytest.raises(NotImplementedError):
        _ = setup.computer.generalized_gauss_newton_factor_inner_shapes


@pytest.mark.parametrize("name", references.ALL)
def test_multiply_hessian(name, graph):
    kind = references.KINDS[name]
    setup = references.Setup(kind)
    v = references.vector(setup)
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
    assert_close(references.flat(product), hessian @ v, rtol=1e-8)

    # Finite differences: the loss value and gradient against numpy, then the
    # Hessian-vector product against differences of that gradient.
    def np_loss(theta):
        return kind.nll(references.np_flat_inputs(kind, theta))

    np.testing.assert_allclose(loss_value, np_loss(setup.theta_value), rtol=1e-10)
    np_gradient = references.numeric_jacobian(
        lambda t: np.array([np_loss(t)]), setup.theta_value
    )[0]
    assert_close(grad_value, np_gradient, rtol=1e-6)
    eps = 1e-5
    plus = setup.run(gradient, setup.theta_value + eps * v)
    minus = setup.run(gradient, setup.theta_value - eps * v)
    assert_close(references.flat(product), (plus - minus) / (2 * eps), rtol=1e-5)


def test_hessian_needs_targets(graph):
    setup = references.Setup(references.KINDS["categorical"], with_targets=False)
    with pytest.raises(ValueError, match="targets unspecified"):
        setup.computer.multiply_hessian(setup.split(references.vector(setup)))


# ---------------------------------------------------------------------------
# Several losses, variables, shapes and errors.


def test_two_losses_add_up(graph):
    # A categorical head and a normal head on the same hidden layer.
    theta_value = references.theta(5)
    theta = tf.placeholder(tf.float64, [theta_value.size])
    params, start = [], 0
    for shape in references.shapes(5):
        size = int(np.prod(shape))
        params.append(tf.reshape(theta[start : start + size], shape))
        start += size
    w1, b1, w2, b2 = params
    out = tf.matmul(tf.tanh(tf.matmul(tf.constant(references.X), w1) + b1), w2) + b2
    categorical, normal = (
        references.KINDS["categorical"],
        references.KINDS["normal_mean"],
    )
    losses = [categorical.make_loss(out[:, :3]), normal.make_loss(out[:, 3:])]
    computer = cmvp.CurvatureMatrixVectorProductComputer(losses, params)

    jacobian = references.numeric_jacobian(
        lambda t: references.np_outputs(t, 5).ravel(), theta_value
    )
    rows = np.arange(15).reshape(3, 5)
    jac_cat, jac_normal = jacobian[rows[:, :3].ravel()], jacobian[rows[:, 3:].ravel()]
    out_value = references.np_outputs(theta_value, 5)
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
                computer.multiply_fisher(references.split(v, 5)),
                computer.multiply_fisher_factor_transpose(references.split(v, 5)),
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
    assert_close(references.flat(fisher), expected, rtol=1e-6)
    np.testing.assert_allclose(
        transposes[0].ravel(), factor_cat.T @ jac_cat @ v, rtol=1e-6
    )
    np.testing.assert_allclose(
        transposes[1].ravel(), factor_normal.T @ jac_normal @ v, rtol=1e-6
    )
    assert_close(
        references.flat(factor),
        jac_cat.T @ factor_cat @ u_cat + jac_normal.T @ factor_normal @ u_normal,
        rtol=1e-6,
    )
    np.testing.assert_array_equal(shapes[0], [3, 3])
    np.testing.assert_array_equal(shapes[1], [3, 2])


def test_variables_as_wrt_tensors(tf_behavior, graph):
    kind = references.KINDS["categorical"]
    theta_value = references.theta(3)
    variables = [tf.Variable(value) for value in references.split(theta_value, 3)]
    unused = tf.Variable(np.ones(2))
    w1, b1, w2, b2 = variables
    out = tf.matmul(tf.tanh(tf.matmul(tf.constant(references.X), w1) + b1), w2) + b2
    computer = cmvp.CurvatureMatrixVectorProductComputer(
        [kind.make_loss(out)], variables + [unused]
    )
    v = _vector_like(theta_value)
    vecs = references.split(v, 3) + [np.array([1.0, -1.0])]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        fisher, hessian = sess.run(
            [computer.multiply_fisher(vecs), computer.multiply_hessian(vecs)]
        )
    jacobian = references.numeric_jacobian(
        lambda t: references.np_flat_inputs(kind, t), theta_value
    )
    loss_fisher, _ = kind.fisher_and_factor([references.np_outputs(theta_value, 3)])
    assert_close(
        references.flat(fisher[:4]), jacobian.T @ loss_fisher @ jacobian @ v, rtol=1e-6
    )
    np.testing.assert_array_equal(fisher[4], [0.0, 0.0])
    np.testing.assert_array_equal(hessian[4], [0.0, 0.0])
    full_hessian = references.numeric_hessian(
        lambda t: kind.nll(references.np_flat_inputs(kind, t)), theta_value
    )
    assert_close(references.flat(hessian[:4]), full_hessian @ v, rtol=1e-5)


def _vector_like(theta_value):
    return np.random.RandomState(6).randn(theta_value.size)


def test_inner_shapes(graph):
    setup = references.Setup(references.KINDS["normal_mean_variance"])
    fisher_shapes = setup.computer.fisher_factor_inner_shapes
    assert isinstance(fisher_shapes, tuple) and len(fisher_shapes) == 1
    np.testing.assert_array_equal(setup.run(fisher_shapes[0]), [3, 4])
    categorical = references.Setup(references.KINDS["categorical"])
    shapes = categorical.computer.generalized_gauss_newton_factor_inner_shapes
    np.testing.assert_array_equal(categorical.run(shapes[0]), [3, 3])


def test_argument_count_errors(graph):
    setup = references.Setup(references.KINDS["categorical"])
    vecs = setup.split(references.vector(setup))
    with pytest.raises(ValueError, match="one entry per wrt tensor"):
        setup.computer.multiply_fisher(vecs[:3])
    with pytest.raises(ValueError, match="one entry per loss"):
        setup.computer.multiply_fisher_factor([np.zeros((3, 3))] * 2)
    with pytest.raises(ValueError, match="one entry per wrt tensor"):
        setup.computer.multiply_hessian(vecs + vecs)
