"""Tests of the Lanczos eigenvalue estimates behind the condition numbers
(`kfac.summaries.extreme_eigenvalues`), against `np.linalg.eigvalsh`."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac import summaries


def _matrix_with_spectrum(eigenvalues, seed=0):
    rng = np.random.RandomState(seed)
    basis, _ = np.linalg.qr(rng.randn(len(eigenvalues), len(eigenvalues)))
    return (basis * eigenvalues) @ basis.T


def _estimate(matrix, num_iterations=summaries.DEFAULT_NUM_ITERATIONS,
              dtype=tf.float64):
    with tf.Graph().as_default(), tf.Session() as sess:
        return sess.run(summaries.extreme_eigenvalues(
            tf.constant(matrix, dtype=dtype), num_iterations))


def _covariance_spectrum(size, seed=1):
    """The spectrum of a sample covariance with unequal feature scales."""
    rng = np.random.RandomState(seed)
    features = rng.randn(size, 3 * size) * np.linspace(0.01, 1.0, size)[:, None]
    return np.linalg.eigvalsh(np.cov(features))


@pytest.mark.parametrize("size", [20, 150])
def test_small_matrices_are_exact(tf_behavior, size):
    eigenvalues = np.random.RandomState(2).rand(size)
    low, high = _estimate(_matrix_with_spectrum(eigenvalues))
    assert low == pytest.approx(eigenvalues.min(), abs=1e-12)
    assert high == pytest.approx(eigenvalues.max(), abs=1e-12)


@pytest.mark.parametrize("spectrum", ["geometric", "covariance", "separated"])
def test_estimates_interlace_and_the_top_converges(tf_behavior, spectrum):
    eigenvalues = {
        "geometric": np.geomspace(1e-4, 1.0, 200),
        "covariance": _covariance_spectrum(300),
        "separated": np.r_[1e-3, np.linspace(0.2, 1.0, 199)],
    }[spectrum]
    low, high = _estimate(_matrix_with_spectrum(eigenvalues))
    # Cauchy interlacing: Ritz values lie inside the spectrum.
    assert eigenvalues.min() - 1e-12 <= low <= high <= eigenvalues.max() + 1e-12
    if spectrum == "separated":
        # An isolated extreme converges fast; the end of an evenly spaced
        # band more slowly.
        assert low == pytest.approx(eigenvalues.min(), rel=1e-3)
        assert high == pytest.approx(eigenvalues.max(), rel=1e-2)
    else:
        assert high == pytest.approx(eigenvalues.max(), rel=1e-3)


@pytest.mark.parametrize("spectrum", ["geometric", "covariance"])
def test_damped_condition_number_within_tolerance(spectrum):
    """With a crowded bottom the estimate is a lower bound of κ, within 15% once
    the damping is 1% of λ_max (the regime of K-FAC's factor damping)."""
    eigenvalues = (np.geomspace(1e-4, 1.0, 200) if spectrum == "geometric"
                   else _covariance_spectrum(300))
    low, high = _estimate(_matrix_with_spectrum(eigenvalues))
    damping = 0.01 * eigenvalues.max()
    true = (eigenvalues.max() + damping) / (eigenvalues.min() + damping)
    estimate = (high + damping) / (low + damping)
    assert estimate <= true * (1 + 1e-9)
    assert estimate >= 0.85 * true


def test_float32_keeps_the_bounds():
    """Rounding changes the Krylov space (so the unconverged bottom estimate),
    not the guarantees: interlacing within float32 precision, the top to 1e-4,
    the damped condition number within 15%."""
    eigenvalues = _covariance_spectrum(300)
    low, high = _estimate(_matrix_with_spectrum(eigenvalues), dtype=tf.float32)
    top = eigenvalues.max()
    assert eigenvalues.min() - 1e-5 * top <= low <= high <= top * (1 + 1e-5)
    assert high == pytest.approx(top, rel=1e-4)
    damping = 0.01 * top
    true = (top + damping) / (eigenvalues.min() + damping)
    assert (high + damping) / (low + damping) >= 0.85 * true


@pytest.mark.parametrize("matrix, expected", [
    (np.eye(200), (1.0, 1.0)),
    (np.zeros((200, 200)), (0.0, 0.0)),
    (np.diag(np.r_[np.zeros(180), np.linspace(0.5, 2.0, 20)]), (0.0, 2.0)),
])
def test_invariant_subspaces_restart_the_iteration(matrix, expected):
    """An identity-initialised factor (Krylov space of dimension 1) or a
    low-rank one: the iteration restarts and still finds the extremes."""
    low, high = _estimate(matrix)
    assert low == pytest.approx(expected[0], abs=1e-10)
    assert high == pytest.approx(expected[1], abs=1e-10)


def test_bad_arguments():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="square matrix of static size"):
            summaries.extreme_eigenvalues(tf.zeros([3, 4]))
        with pytest.raises(ValueError, match="square matrix of static size"):
            summaries.extreme_eigenvalues(tf.placeholder(tf.float32, [None, None]))
        with pytest.raises(ValueError, match="num_iterations must be positive"):
            summaries.extreme_eigenvalues(tf.eye(3), 0)
