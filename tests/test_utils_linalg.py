"""Tests of kfac.ops.utils' damped inverses and eigendecompositions (API.md §2),
against numpy."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from session_helpers import run

from kfac.ops import utils


def random_psd(rng, size, rank=None, dtype=np.float64):
    factor = rng.randn(size, size if rank is None else rank)
    return (factor @ factor.T).astype(dtype)


# ---------------------------------------------------------------------------
# Positive-definite helpers


@pytest.mark.parametrize("method", ["cholesky", "matrix_inverse", "eig"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_posdef_inv_methods(method, dtype, restore_constants, graph, rng):
    matrix = random_psd(rng, 5, dtype=dtype)
    utils.set_global_constants(posdef_inv_method=method)
    damping = 0.3
    inverse = utils.posdef_inv(tf.constant(matrix), damping)
    direct = utils.posdef_inv_functions[method](
        tf.constant(matrix), tf.eye(5, dtype=dtype), tf.constant(damping, dtype)
    )
    assert inverse.dtype == dtype and inverse.shape.as_list() == [5, 5]
    expected = np.linalg.inv(matrix.astype(np.float64) + damping * np.eye(5))
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    for value in run([inverse, direct]):
        np.testing.assert_allclose(value, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_damped_posdef_inverse_pd_matrix(dtype, tf_behavior, rng):
    matrix = random_psd(rng, 6, dtype=dtype) + np.eye(6, dtype=dtype)
    with tf.Graph().as_default():
        inverse = utils.damped_posdef_inverse(tf.constant(matrix), 0.01)
        assert inverse.shape.as_list() == [6, 6]
        value = run(inverse)
    expected = np.linalg.inv(matrix.astype(np.float64) + 0.01 * np.eye(6))
    np.testing.assert_allclose(
        value, expected, rtol=1e-4 if dtype == np.float32 else 1e-10
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_damped_posdef_inverse_falls_back_to_clipped_eig(dtype, tf_behavior, rng):
    """M + dI indefinite: Cholesky gives NaNs, the fallback clips λ(M) at 0."""
    eigenvectors, _ = np.linalg.qr(rng.randn(4, 4))
    eigenvalues = np.array([3.0, 2.0, 1.0, -0.5])
    matrix = ((eigenvectors * eigenvalues) @ eigenvectors.T).astype(dtype)
    damping = 0.1
    with tf.Graph().as_default():
        plain_cholesky = tf.linalg.cholesky(
            tf.constant(matrix) + damping * np.eye(4, dtype=dtype)
        )
        inverse = utils.damped_posdef_inverse(tf.constant(matrix), damping)
        via_posdef_inv = utils.posdef_inv(tf.constant(matrix), damping)
        chol_value, inverse_value, posdef_value = run(
            [plain_cholesky, inverse, via_posdef_inv]
        )
    assert not np.isfinite(chol_value).all()  # what the fallback guards against
    clipped = np.maximum(eigenvalues, 0.0) + damping
    expected = (eigenvectors / clipped) @ eigenvectors.T
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(inverse_value, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(posdef_value, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_damped_posdef_inverse_rank_deficient_tiny_damping(dtype, tf_behavior, rng):
    matrix = random_psd(rng, 8, rank=3, dtype=dtype)
    damping = 1e-8
    with tf.Graph().as_default():
        damping_var = tf.placeholder(dtype, [])
        inverse = utils.damped_posdef_inverse(tf.constant(matrix), damping_var)
        eig_inverse = utils.posdef_inv_eig(tf.constant(matrix), None, damping)
        values = run([inverse, eig_inverse], {damping_var: damping})
    for value in values:
        assert np.isfinite(value).all()
        np.testing.assert_allclose(
            value, value.T, rtol=1e-3, atol=1e-3 * np.abs(value).max()
        )
    if dtype == np.float64:
        damped = matrix + damping * np.eye(8)
        residual = damped @ values[0] - np.eye(8)
        assert np.abs(residual).max() < 1e-4
        np.testing.assert_allclose(values[1], values[0], rtol=1e-4, atol=1e-4 * 1e8)


def test_clipped_eig_inverse_singular_without_damping(graph):
    inverse = utils.clipped_eig_inverse(tf.zeros([3, 3], tf.float32), 0.0)
    value = run(inverse)
    assert np.isfinite(value).all()
    # Floor = smallest normal float32, so the inverse is I / tiny.
    np.testing.assert_allclose(value, np.eye(3) / np.finfo(np.float32).tiny, rtol=1e-5)


def test_damped_posdef_inverse_rejects_non_square(graph):
    with pytest.raises(ValueError, match="square"):
        utils.damped_posdef_inverse(tf.zeros([2, 3]), 0.1)


@pytest.mark.parametrize("method", ["self_adjoint", "svd"])
def test_posdef_eig(method, restore_constants, graph, rng):
    matrix = random_psd(rng, 5)
    utils.POSDEF_EIG_METHOD = method
    eigenvalues, eigenvectors = utils.posdef_eig(tf.constant(matrix))
    eigenvalues, eigenvectors = run([eigenvalues, eigenvectors])
    np.testing.assert_allclose(
        np.sort(eigenvalues), np.linalg.eigvalsh(matrix), rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(
        (eigenvectors * eigenvalues) @ eigenvectors.T, matrix, atol=1e-10
    )
    np.testing.assert_allclose(eigenvectors.T @ eigenvectors, np.eye(5), atol=1e-10)


def test_posdef_eig_self_adjoint_takes_absolute_values(graph):
    matrix = np.diag([2.0, -1.0, 0.5])
    eigenvalues, _ = utils.posdef_eig_self_adjoint(tf.constant(matrix))
    np.testing.assert_allclose(np.sort(run(eigenvalues)), [0.5, 1.0, 2.0])


def test_convert_to_dtype_casts_a_float32_resource_variable_to_float64(tf_behavior):
    # A float32 damping variable must reach a float64 factor's inverse.
    with tf.Graph().as_default():
        damping = tf.get_variable("damping", initializer=0.25)
        converted = utils.convert_to_dtype(damping, tf.float64)
        inverse = utils.posdef_inv(tf.constant(np.eye(2)), damping)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            value, inverse_value = sess.run([converted, inverse])
    assert converted.dtype == tf.float64
    np.testing.assert_allclose(value, 0.25)
    np.testing.assert_allclose(inverse_value, np.eye(2) / 1.25, rtol=1e-6)
