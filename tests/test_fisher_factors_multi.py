"""Tests of FullyConnectedMultiKF: the multi-use covariance, the lag-1 cross
moment and the option-1 / option-2 "series" quantities, against numpy
computations of the formulas in API.md §4."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from damping_helpers import DampingFunc

from kfac.ops import fisher_factors as ff

NUM_USES, BATCH, DIM = 3, 2, 2


def _homog(rows):
    return np.concatenate([rows, np.ones((rows.shape[0], 1))], axis=1)


def _np_cov_and_cov_dt1(sequence):
    """`sequence[t, b]` rows (bias appended) → (E[ã ãᵀ], Σ_t ã_{t+1} ã_tᵀ / (T·B))."""
    num_uses, batch = sequence.shape[:2]
    cov = sum(
        np.outer(sequence[t, b], sequence[t, b])
        for t in range(num_uses)
        for b in range(batch)
    ) / (num_uses * batch)
    cov_dt1 = sum(
        np.outer(sequence[t + 1, b], sequence[t, b])
        for t in range(num_uses - 1)
        for b in range(batch)
    ) / (num_uses * batch)
    return cov, cov_dt1


def _inverse_sqrt(matrix, damping):
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * (eigenvalues + damping) ** -0.5) @ eigenvectors.T


def _apply_to_eigenvalues(symmetric, fn):
    eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
    return (eigenvectors * fn(eigenvalues)) @ eigenvectors.T


def test_cov_and_cov_dt1_on_three_step_sequence(graph, tf_behavior, rng):
    rows = tf.placeholder(tf.float64, [None, DIM])
    factor = ff.FullyConnectedMultiKF(
        ((rows,),), num_uses=np.int64(NUM_USES), has_bias=True
    )
    factor.register_cov_dt1()
    factor.instantiate_cov_variables()
    update = factor.make_covariance_update_op(0.5)
    assert update.type == "NoOp"  # cov and cov_dt1 updated by one grouped op
    sequences = [rng.randn(NUM_USES, BATCH, DIM) for _ in range(2)]
    expected_cov, expected_dt1 = np.eye(DIM + 1), np.zeros((DIM + 1, DIM + 1))
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for sequence in sequences:
            sess.run(update, {rows: sequence.reshape(-1, DIM)})  # use-major rows
            cov, cov_dt1 = _np_cov_and_cov_dt1(
                _homog(sequence.reshape(-1, DIM)).reshape(NUM_USES, BATCH, DIM + 1)
            )
            expected_cov = 0.5 * expected_cov + 0.5 * cov
            expected_dt1 = 0.5 * expected_dt1 + 0.5 * cov_dt1
        values = sess.run([factor.get_cov(), factor.get_cov_dt1()])
    np.testing.assert_allclose(values[0], expected_cov, rtol=1e-10)
    np.testing.assert_allclose(values[1], expected_dt1, rtol=1e-10)
    assert factor.get_cov_dt1().op.name == factor.name + "/cov_dt1"


def test_without_cov_dt1_the_update_is_the_parent_one(graph):
    factor = ff.FullyConnectedMultiKF(((tf.ones([6, 2]),),), num_uses=3)
    factor.instantiate_cov_variables()
    update = factor.make_covariance_update_op(0.0)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        np.testing.assert_allclose(sess.run(update), np.ones((2, 2)))
    with pytest.raises(AssertionError):
        factor.get_cov_dt1()


def test_properties_names_and_errors(graph):
    inputs = tf.ones([6, 2], name="x")
    factor = ff.FullyConnectedMultiKF(((inputs,),), num_uses=3, has_bias=True)
    assert factor.name == "ff_fc_multi_x_3_True"
    assert factor._num_timesteps == 3
    assert factor._vec_shape == [3]
    with pytest.raises(KeyError):
        factor.get_option1quants(DampingFunc(0.1))
    with pytest.raises(KeyError):
        factor.get_option2quants(DampingFunc(0.1))
    with pytest.raises(ValueError, match="num_uses"):
        ff.FullyConnectedMultiKF(((inputs,),)).register_cov_dt1()


def _series_factor(rng, damping_funcs):
    sequence = rng.randn(NUM_USES, BATCH, DIM)
    rows = tf.constant(sequence.reshape(-1, DIM), tf.float64)
    factor = ff.FullyConnectedMultiKF(((rows,),), num_uses=NUM_USES, has_bias=True)
    factor.register_cov_dt1()
    for register, damping_func in damping_funcs:
        register(factor, damping_func)
    factor.instantiate_cov_variables()
    factor.instantiate_inv_variables()
    update = factor.make_covariance_update_op(0.0)
    inverse_ops = factor.make_inverse_update_ops()
    assert len(inverse_ops) == 1
    return factor, update, inverse_ops


def test_option_quantities_and_inverse_share_one_op(graph, tf_behavior, rng):
    damping = DampingFunc(0.1)
    other = DampingFunc(0.7)
    factor, update, inverse_ops = _series_factor(
        rng,
        [
            (ff.FullyConnectedMultiKF.register_option1quants, damping),
            (ff.FullyConnectedMultiKF.register_option2quants, damping),
            (ff.FullyConnectedMultiKF.register_option2quants, other),
            (ff.FullyConnectedMultiKF.register_inverse, other),
        ],
    )
    names = {v.op.name.split("/")[-1] for v in tf.global_variables()}
    assert {
        "Lmat_damp0.1",
        "psi_damp0.1",
        "Pmat_damp0.1",
        "Kmat_damp0.1",
        "mu_damp0.1",
        "Pmat_damp0.7",
        "Kmat_damp0.7",
        "mu_damp0.7",
        "matpower_exp-1_damp0.7",
    } <= names
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(update)
        sess.run(inverse_ops)
        cov, cov_dt1 = sess.run([factor.get_cov(), factor.get_cov_dt1()])
        lmat, psi = sess.run(factor.get_option1quants(damping))
        option2 = {d(): sess.run(factor.get_option2quants(d)) for d in (damping, other)}
        inverse = sess.run(factor.get_inverse(other))
    np.testing.assert_allclose(inverse, np.linalg.inv(cov + 0.7 * np.eye(3)), rtol=1e-8)

    # Option 1: Ψ = S sym(C₁) S = U diag(ψ) Uᵀ, L = S U.
    inv_sqrt = _inverse_sqrt(cov, 0.1)
    psi_hat = inv_sqrt @ ((cov_dt1 + cov_dt1.T) / 2) @ inv_sqrt
    np.testing.assert_allclose(
        np.sort(psi),
        np.sort(np.abs(np.linalg.eigvalsh(psi_hat))),
        rtol=1e-8,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        lmat @ lmat.T, np.linalg.inv(cov + 0.1 * np.eye(3)), rtol=1e-8
    )
    np.testing.assert_allclose(
        lmat @ np.diag(psi) @ lmat.T,
        inv_sqrt @ _apply_to_eigenvalues(psi_hat, np.abs) @ inv_sqrt,
        rtol=1e-7,
        atol=1e-12,
    )

    # Option 2: Ψ = S C₁ S = Uₛ diag(σ) Eᵀ, P = C₁ᵀ (C₀+dI)⁻¹, K = S E, μ = min(σ², 1).
    for value, (pmat, kmat, mu) in option2.items():
        inv_sqrt = _inverse_sqrt(cov, value)
        psi_hat = inv_sqrt @ cov_dt1 @ inv_sqrt
        damped_inverse = np.linalg.inv(cov + value * np.eye(3))
        np.testing.assert_allclose(
            pmat, cov_dt1.T @ damped_inverse, rtol=1e-7, atol=1e-12
        )
        np.testing.assert_allclose(kmat @ kmat.T, damped_inverse, rtol=1e-8)
        singular_values = np.linalg.svd(psi_hat, compute_uv=False)
        np.testing.assert_allclose(
            np.sort(mu),
            np.sort(np.minimum(singular_values**2, 1)),
            rtol=1e-7,
            atol=1e-12,
        )
        clipped_gram = _apply_to_eigenvalues(
            psi_hat.T @ psi_hat, lambda ev: np.minimum(ev, 1.0)
        )
        np.testing.assert_allclose(
            kmat @ np.diag(mu) @ kmat.T,
            inv_sqrt @ clipped_gram @ inv_sqrt,
            rtol=1e-7,
            atol=1e-12,
        )
