"""Property-based tests of the factor maths (hypothesis).

Random shapes, batch sizes smaller than the dimension (rank-deficient factors)
and dampings down to 1e-8 (and 0): damped inverses are always finite,
symmetric and positive semi-definite, and equal `np.linalg.inv` wherever the
damped matrix is well enough conditioned for the dtype; the moving averages
equal the numpy formula and skip exactly the non-finite estimates.
"""

import functools

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from kfac.ops import fisher_blocks
from kfac.ops import fisher_factors as ff
from kfac.ops import utils

SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
METHODS = ("cholesky", "matrix_inverse", "eig")
DTYPES = (np.float32, np.float64)

dampings = st.one_of(st.just(0.0), st.floats(-8.0, 0.0).map(lambda e: 10.0**e))


@st.composite
def rank_deficient_covariances(draw, max_dim=8):
    """`C = XᵀX / B` with `X` `[B, n]`, `B` often smaller than `n`."""
    dim = draw(st.integers(1, max_dim))
    batch = draw(st.integers(1, dim + 2))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = 10.0 ** draw(st.integers(-3, 3))
    rows = np.random.RandomState(seed).randn(batch, dim) * scale
    return rows.T @ rows / batch


@functools.lru_cache(maxsize=None)
def _inverse_graph():
    """One graph/session with a dynamic-shape inverse op per (method, dtype)."""
    graph = tf.Graph()
    ops = {}
    with graph.as_default():
        for dtype in DTYPES:
            matrix = tf.placeholder(dtype, [None, None])
            damping = tf.placeholder(dtype, [])
            for method in METHODS:
                inverse = utils.posdef_inv_functions[method](
                    matrix, tf.eye(tf.shape(matrix)[0], dtype=dtype), damping)
                ops[method, dtype] = (matrix, damping, inverse)
    return tf.Session(graph=graph), ops


def _condition_number(matrix):
    eigenvalues = np.linalg.eigvalsh(matrix)
    return eigenvalues.max() / max(eigenvalues.min(), 1e-300)


@settings(max_examples=60, **SETTINGS)
@given(cov=rank_deficient_covariances(), damping=dampings,
       method=st.sampled_from(METHODS), dtype=st.sampled_from(DTYPES))
def test_damped_inverse_is_finite_psd_and_accurate(cov, damping, method, dtype):
    sess, ops = _inverse_graph()
    matrix, damping_ph, inverse = ops[method, dtype]
    result = sess.run(inverse, {matrix: cov.astype(dtype), damping_ph: damping})
    eps = np.finfo(dtype).eps
    assert np.all(np.isfinite(result))
    scale = np.abs(result).max()
    np.testing.assert_allclose(result, result.T, atol=1e-3 * scale + 1e-30)
    eigenvalues = np.linalg.eigvalsh((result + result.T) / 2)
    assert eigenvalues.min() >= -1e-3 * eigenvalues.max()
    damped = cov + damping * np.eye(len(cov))
    error_bound = 100 * len(cov) * eps * _condition_number(damped)
    if error_bound < 0.1:
        want = np.linalg.inv(damped)
        relative_error = np.linalg.norm(result - want) / np.linalg.norm(want)
        assert relative_error <= error_bound


@settings(max_examples=60, **SETTINGS)
@given(eigenvalues=st.lists(st.floats(-1e-3, 1e3), min_size=1, max_size=10),
       damping=dampings, dtype=st.sampled_from(DTYPES))
def test_floored_damped_eigenvalues(eigenvalues, damping, dtype):
    eigenvalues = np.asarray(eigenvalues, dtype)
    with tf.Graph().as_default(), tf.Session() as sess:
        floored = sess.run(utils.floor_damped_eigenvalues(eigenvalues, damping))
    finfo = np.finfo(dtype)
    floor = max(finfo.eps * np.abs(eigenvalues).max(), finfo.tiny)
    damped = np.maximum(eigenvalues, 0) + dtype(damping)
    assert np.all(floored > 0) and np.all(np.isfinite(1 / floored))
    np.testing.assert_allclose(floored, np.maximum(damped, floor), rtol=4 * finfo.eps)


@settings(max_examples=8, **SETTINGS)
@given(dim=st.integers(1, 6), batch=st.integers(1, 8), has_bias=st.booleans(),
       decay=st.floats(0.0, 1.0), dampings_pair=st.lists(dampings, min_size=1,
                                                          max_size=2, unique=True),
       seed=st.integers(0, 1000), dtype=st.sampled_from(DTYPES))
def test_fully_connected_factor_statistics_and_inverses(
        dim, batch, has_bias, decay, dampings_pair, seed, dtype):
    """Cov EMA from the numpy formula; its inverses (Cholesky path for one
    damping, eigen path for two) finite and accurate where well conditioned."""
    inputs = np.random.RandomState(seed).randn(batch, dim).astype(dtype)
    with tf.Graph().as_default():
        factor = ff.FullyConnectedKroneckerFactor(
            ((tf.constant(inputs),),), has_bias=has_bias)
        factor.instantiate_cov_variables()
        damping_funcs = [fisher_blocks.PackagedFunc(lambda d=d: d, ("d", d))
                         for d in dampings_pair]
        for func in damping_funcs:
            factor.register_matpower(-1, func)
        factor.instantiate_inv_variables()
        cov_update = factor.make_covariance_update_op(decay)
        inverse_update = factor.make_inverse_update_ops()
        inverses = [factor.get_inverse(func) for func in damping_funcs]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            cov = sess.run(cov_update)
            sess.run(inverse_update)
            values = sess.run(inverses)
            assert sess.run(factor.num_skipped_updates) == 0
    rows = np.hstack([inputs, np.ones((batch, 1), dtype)]) if has_bias else inputs
    size = rows.shape[1]
    rows = rows.astype(np.float64)
    want_cov = decay * np.eye(size) + (1 - decay) * rows.T @ rows / batch
    np.testing.assert_allclose(cov, want_cov, rtol=1e-5, atol=1e-5)
    eps = np.finfo(dtype).eps
    for damping, value in zip(dampings_pair, values):
        assert np.all(np.isfinite(value))
        damped = cov.astype(np.float64) + damping * np.eye(size)
        error_bound = 100 * size * eps * _condition_number(damped)
        if error_bound < 0.1:
            want = np.linalg.inv(damped)
            assert (np.linalg.norm(value - want) / np.linalg.norm(want)
                    <= error_bound)


@functools.lru_cache(maxsize=None)
def _ema_graph():
    graph = tf.Graph()
    with graph.as_default():
        grads = tf.placeholder(tf.float32, [3])
        factor = ff.FullFactor((grads,), 2)
        factor.instantiate_cov_variables()
        update = factor.make_covariance_update_op(0.75)
        init = tf.global_variables_initializer()
    return tf.Session(graph=graph), grads, factor, update, init


finite_or_not = st.one_of(st.floats(-10.0, 10.0), st.sampled_from([np.nan, np.inf,
                                                                   -np.inf]))


@settings(max_examples=40, **SETTINGS)
@given(st.lists(st.lists(finite_or_not, min_size=3, max_size=3), min_size=1,
                max_size=5))
def test_moving_average_skips_exactly_the_non_finite_estimates(sequence):
    sess, grads, factor, update, init = _ema_graph()
    sess.run(init)
    want, skipped = np.eye(3), 0
    for vector in sequence:
        vector = np.asarray(vector, np.float32)
        got = sess.run(update, {grads: vector})
        with np.errstate(invalid="ignore", over="ignore"):
            estimate = np.outer(vector, vector) / 2
        if np.all(np.isfinite(estimate)):
            want = 0.75 * want + 0.25 * estimate
        else:
            skipped += 1
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert sess.run(factor.num_skipped_updates) == skipped


@pytest.mark.parametrize("method", METHODS)
def test_singular_zero_damping_edge_case(method):
    """Exactly singular, zero damping: the largest finite inverse, no error."""
    sess, ops = _inverse_graph()
    matrix, damping, inverse = ops[method, np.float32]
    result = sess.run(inverse, {matrix: np.zeros((3, 3), np.float32), damping: 0.0})
    assert np.all(np.isfinite(result))
    np.testing.assert_allclose(result, np.eye(3) / np.finfo(np.float32).tiny, rtol=1e-6)
