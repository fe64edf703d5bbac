"""Tests of the abstract factor classes, inverse/matrix-power variables and
update ops, and the left/right products of fisher_factors (API.md §4)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from damping_helpers import DampingFunc

from kfac.ops import fisher_factors as ff


class FisherFactorDummy(ff.FisherFactor):
    """Supplies only the documented abstract members (some as plain methods)."""

    @property
    def _var_scope(self):
        return "dummy/a_b_c"

    @property
    def _cov_shape(self):
        raise NotImplementedError

    @property
    def _num_sources(self):
        return 1

    @property
    def _dtype(self):
        return tf.float32

    def _compute_new_cov(self):
        raise NotImplementedError

    def _num_towers(self):
        raise NotImplementedError

    def _get_data_device(self):
        raise NotImplementedError

    def instantiate_inv_variables(self):
        raise NotImplementedError

    def make_inverse_update_ops(self):
        return []

    def get_cov(self):
        raise NotImplementedError

    def left_multiply_matpower(self, x, exp, damping_func):
        raise NotImplementedError

    def right_multiply_matpower(self, x, exp, damping_func):
        raise NotImplementedError


class InverseProvidingFactorDummy(ff.InverseProvidingFactor):
    """Like the original tests' dummy: a factor whose `_cov` tests assign."""

    def __init__(self, shape, dtype=tf.float32):
        self._shape = shape
        self._dummy_dtype = dtype
        super(InverseProvidingFactorDummy, self).__init__()

    @property
    def _var_scope(self):
        return "dummy/a_b_c"

    @property
    def _cov_shape(self):
        return self._shape

    @property
    def _num_sources(self):
        return 1

    @property
    def _dtype(self):
        return self._dummy_dtype

    def _compute_new_cov(self):
        raise NotImplementedError

    def _num_towers(self):
        raise NotImplementedError

    def _get_data_device(self):
        raise NotImplementedError


def _factor_with_cov(cov, dampings_and_exps, dtype=tf.float32):
    factor = InverseProvidingFactorDummy(list(np.shape(cov)), dtype)
    factor._cov = tf.constant(cov, dtype=dtype)
    for exp, damping_func in dampings_and_exps:
        factor.register_matpower(exp, damping_func)
    factor.instantiate_inv_variables()
    return factor


def _damped_power(cov, damping, exp):
    """`(C + dI)^exp` by an eigendecomposition in float64."""
    eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(cov, np.float64))
    return (eigenvectors * (eigenvalues + damping) ** exp) @ eigenvectors.T


# ------------------------------------------------------------ abstract API


def test_abstract_members_are_exactly_the_documented_ones(graph):
    assert FisherFactorDummy.__abstractmethods__ == frozenset()
    assert ff.FisherFactor.__abstractmethods__ == frozenset(
        [
            "_var_scope",
            "_cov_shape",
            "_num_sources",
            "_num_towers",
            "_dtype",
            "_compute_new_cov",
            "_get_data_device",
            "instantiate_inv_variables",
            "make_inverse_update_ops",
            "get_cov",
            "left_multiply_matpower",
            "right_multiply_matpower",
        ]
    )
    factor = FisherFactorDummy()
    assert factor.name == "dummy/a_b_c"
    assert factor.get_cov_var() is None
    assert factor._cov_initializer is ff.covariance_initializer
    InverseProvidingFactorDummy([2, 2])  # constructible from the same members


# ------------------------------------------------------- inverse variables


def test_register_inverse_shares_variables_by_damping_id(graph):
    damping_funcs = [
        DampingFunc(0.1),
        DampingFunc(0.1),
        DampingFunc(1e-5),
        DampingFunc(1e-5),
    ]
    factor = InverseProvidingFactorDummy([2, 2])
    for damping_func in damping_funcs:
        factor.register_inverse(damping_func)
    factor.register_matpower(1, damping_funcs[0])  # ignored
    factor.instantiate_inv_variables()
    inverse = factor.get_inverse(damping_funcs[0])
    assert inverse is factor.get_inverse(damping_funcs[1])
    assert inverse is not factor.get_inverse(damping_funcs[2])
    assert factor.get_inverse(damping_funcs[2]) is factor.get_inverse(damping_funcs[3])
    assert factor._matpower_registrations == {(-1, (0.1,)), (-1, (1e-5,))}
    assert {v.op.name for v in tf.global_variables("dummy/a_b_c")} == {
        "dummy/a_b_c/matpower_exp-1_damp0.1",
        "dummy/a_b_c/matpower_exp-1_damp1e-05",
    }
    assert not tf.trainable_variables()
    with pytest.raises(KeyError):
        factor.get_matpower(1, damping_funcs[0])
    with pytest.raises(KeyError):
        factor.get_matpower(2, damping_funcs[0])


def test_matpower_names_from_numpy_scalars_and_tensors(graph):
    damping = tf.constant(0.5, name="damping")
    factor = InverseProvidingFactorDummy([2, 2])
    factor.register_matpower(np.int64(2), DampingFunc(np.float32(0.5)))
    factor.register_matpower(-1, DampingFunc(damping, ("mult", damping, np.int64(4))))
    factor.instantiate_inv_variables()
    names = sorted(v.op.name for v in factor._matpower_by_exp_and_damping.values())
    assert names == [
        "dummy/a_b_c/matpower_exp-1_dampmult_damping_4",
        "dummy/a_b_c/matpower_exp2_damp0.5",
    ]
    assert factor.get_matpower(2, DampingFunc(0.5)) is not None


def test_get_matpower_before_instantiation_raises_key_error(graph):
    factor = InverseProvidingFactorDummy([2, 2])
    factor.register_inverse(DampingFunc(0.1))
    with pytest.raises(KeyError):
        factor.get_inverse(DampingFunc(0.1))


# ----------------------------------------------------------- inverse updates


def test_cholesky_path_single_inverse_reads_cov_at_call_time(graph, tf_behavior):
    damping = DampingFunc(0.0)
    factor = _factor_with_cov([[1.0, 0.0], [0.0, 1.0]], [(-1, damping)])
    factor._cov = tf.constant([[5.0, 2.0], [2.0, 4.0]])  # assigned after registering
    ops = factor.make_inverse_update_ops()
    assert len(ops) == 1
    assert ops[0].type != "NoOp"  # a plain assignment, not a group
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        np.testing.assert_allclose(sess.run(factor.get_inverse(damping)), np.eye(2))
        sess.run(ops)
        np.testing.assert_allclose(
            sess.run(factor.get_inverse(damping)),
            np.linalg.inv([[5.0, 2.0], [2.0, 4.0]]),
            rtol=1e-5,
        )


def test_eigen_path_for_other_powers_and_two_dampings(graph, tf_behavior):
    cov = np.array([[6.0, 2.0], [2.0, 4.0]])
    funcs = [DampingFunc(0.5), DampingFunc(2.0)]
    factor = _factor_with_cov(cov, [(2, funcs[0]), (-1, funcs[0]), (-1, funcs[1])])
    ops = factor.make_inverse_update_ops()
    assert len(ops) == 1 and ops[0].type == "NoOp"  # one grouped op
    assert not factor._eigendecomp  # cleared after the round
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(ops)
        squared, inv_small, inv_large = sess.run(
            [
                factor.get_matpower(2, funcs[0]),
                factor.get_inverse(funcs[0]),
                factor.get_inverse(funcs[1]),
            ]
        )
    np.testing.assert_allclose(
        squared, np.linalg.matrix_power(cov + 0.5 * np.eye(2), 2), rtol=1e-5
    )
    np.testing.assert_allclose(
        inv_small, np.linalg.inv(cov + 0.5 * np.eye(2)), rtol=1e-5
    )
    np.testing.assert_allclose(
        inv_large, np.linalg.inv(cov + 2.0 * np.eye(2)), rtol=1e-5
    )


@pytest.mark.parametrize(
    "threshold, num_inverses, expected_ops, grouped",
    [(2, 1, 1, False), (2, 2, 1, True), (3, 2, 2, False), (3, 3, 1, True)],
)
def test_eigendecomposition_threshold(
    graph, threshold, num_inverses, expected_ops, grouped
):
    ff.set_global_constants(eigenvalue_decomposition_threshold=threshold)
    cov = np.array([[1.0, 2.0], [3.0, 4.0]])  # the original test's (non-symmetric) cov
    funcs = [DampingFunc(1.0 / (i + 1)) for i in range(num_inverses)]
    factor = _factor_with_cov(cov, [(-1, f) for f in funcs])
    ops = factor.make_inverse_update_ops()
    assert len(ops) == expected_ops
    assert all((op.type == "NoOp") == grouped for op in ops)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(ops)
        inverses = sess.run([factor.get_inverse(f) for f in funcs])
    if grouped:  # eigh reads the lower triangle, [[1, 3], [3, 4]]: λ = -0.54 → 0
        for func, inverse in zip(funcs, inverses):
            np.testing.assert_allclose(
                inverse, _clipped_power(cov, func(), -1), rtol=1e-4
            )
    for i in range(len(inverses)):
        for j in range(i + 1, len(inverses)):
            assert inverses[i][0][0] != inverses[j][0][0]


def _clipped_power(cov, damping, exp, clip=0.0):
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    eigenvalues = np.maximum(eigenvalues, clip)
    return (eigenvectors * (eigenvalues + damping) ** exp) @ eigenvectors.T


def test_eigenvalue_clipping_threshold(graph):
    ff.set_global_constants(eigenvalue_clipping_threshold=1.0)
    cov = np.diag([0.25, 3.0])
    damping = DampingFunc(0.5)
    factor = _factor_with_cov(cov, [(-1, damping), (2, damping)])
    ops = factor.make_inverse_update_ops()
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(ops)
        np.testing.assert_allclose(
            sess.run(factor.get_inverse(damping)),
            np.diag([1 / 1.5, 1 / 3.5]),
            rtol=1e-6,
        )
        eigenvalues, _ = sess.run(factor.get_eigendecomp())
    np.testing.assert_allclose(sorted(eigenvalues), [1.0, 3.0])


@pytest.mark.parametrize("num_inverses", [1, 2])
@pytest.mark.parametrize("kind", ["float", "tensor", "variable"])
def test_damping_kinds_and_variable_changes(graph, tf_behavior, kind, num_inverses):
    cov = np.array([[2.0, 1.0], [1.0, 3.0]])
    if kind == "float":
        value = 0.5
    elif kind == "tensor":
        value = tf.constant(0.5, name="damping_tensor")
    else:
        value = tf.get_variable("damping", initializer=0.5, trainable=False)
    funcs = [DampingFunc(value)] + [DampingFunc(7.0)] * (num_inverses - 1)
    factor = _factor_with_cov(cov, [(-1, f) for f in funcs])
    ops = factor.make_inverse_update_ops()
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(ops)
        np.testing.assert_allclose(
            sess.run(factor.get_inverse(funcs[0])),
            np.linalg.inv(cov + 0.5 * np.eye(2)),
            rtol=1e-5,
        )
        if kind == "variable":
            sess.run(value.assign(2.0))
            sess.run(ops)
            np.testing.assert_allclose(
                sess.run(factor.get_inverse(funcs[0])),
                np.linalg.inv(cov + 2.0 * np.eye(2)),
                rtol=1e-5,
            )


@pytest.mark.parametrize("num_inverses", [1, 2])
def test_rank_deficient_cov_with_tiny_damping_stays_finite(
    graph, tf_behavior, num_inverses, rng
):
    ff.set_global_constants(init_covariances_at_zero=True)
    inputs = tf.constant(rng.randn(2, 4), tf.float32)  # batch 2 < dim 4
    factor = ff.FullyConnectedKroneckerFactor(((inputs,),))
    funcs = [DampingFunc(1e-8 * (i + 1)) for i in range(num_inverses)]
    for func in funcs:
        factor.register_inverse(func)
    factor.instantiate_cov_variables()
    factor.instantiate_inv_variables()
    update = factor.make_covariance_update_op(0.0)
    ops = factor.make_inverse_update_ops()
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        cov = sess.run(update)
        assert np.linalg.matrix_rank(cov, tol=1e-5) == 2
        sess.run(ops)
        inverses = sess.run([factor.get_inverse(f) for f in funcs])
    for inverse in inverses:
        assert np.all(np.isfinite(inverse))
        # The null space of cov is scaled by about 1/damping (float32 rounding
        # of cov makes the exact value meaningless).
        assert np.abs(inverse).max() > 1e5


def test_float64_factor_and_inverses(graph, rng):
    inputs = tf.constant(rng.randn(6, 3), tf.float64)
    factor = ff.FullyConnectedKroneckerFactor(((inputs,),), has_bias=True)
    damping, power = DampingFunc(0.1), DampingFunc(0.3)
    factor.register_inverse(damping)
    factor.register_matpower(-0.5, power)
    factor.instantiate_cov_variables()
    factor.instantiate_inv_variables()
    update = factor.make_covariance_update_op(0.0)
    with tf.control_dependencies([update]):
        ops = factor.make_inverse_update_ops()
    assert factor.get_cov_var().dtype.base_dtype == tf.float64
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(ops)
        cov, inverse, inv_sqrt = sess.run(
            [
                factor.get_cov(),
                factor.get_inverse(damping),
                factor.get_matpower(-0.5, power),
            ]
        )
    np.testing.assert_allclose(
        inverse, np.linalg.inv(cov + 0.1 * np.eye(4)), rtol=1e-10
    )
    np.testing.assert_allclose(inv_sqrt, _damped_power(cov, 0.3, -0.5), rtol=1e-10)


# ------------------------------------------------------------------ products


def test_left_and_right_multiply_matpower(graph, rng):
    cov = np.array([[2.0, 1.0], [1.0, 3.0]])
    damping = DampingFunc(0.5)
    factor = _factor_with_cov(cov, [(-1, damping)])
    ops = factor.make_inverse_update_ops()
    x = rng.randn(2, 3)
    y = rng.randn(3, 2)
    sparse = tf.IndexedSlices(
        tf.constant(y[:2], tf.float32), tf.constant([0, 2]), tf.constant([4, 2])
    )
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(ops)
        left_1, left_inv, right_1, right_inv, sparse_1, sparse_inv = sess.run(
            [
                factor.left_multiply_matpower(tf.constant(x, tf.float32), 1, damping),
                factor.left_multiply_matpower(tf.constant(x, tf.float32), -1, damping),
                factor.right_multiply_matpower(tf.constant(y, tf.float32), 1, damping),
                factor.right_multiply_matpower(tf.constant(y, tf.float32), -1, damping),
                factor.right_multiply_matpower(sparse, 1, damping),
                factor.right_multiply_matpower(sparse, -1, damping),
            ]
        )
    damped = cov + 0.5 * np.eye(2)
    np.testing.assert_allclose(left_1, damped @ x, rtol=1e-5)
    np.testing.assert_allclose(left_inv, np.linalg.inv(damped) @ x, rtol=1e-5)
    np.testing.assert_allclose(right_1, y @ damped, rtol=1e-5)
    np.testing.assert_allclose(right_inv, y @ np.linalg.inv(damped), rtol=1e-5)
    np.testing.assert_allclose(sparse_1.values, y[:2] @ damped, rtol=1e-5)
    np.testing.assert_array_equal(sparse_1.indices, [0, 2])
    np.testing.assert_allclose(
        sparse_inv.values, y[:2] @ np.linalg.inv(damped), rtol=1e-5
    )


def test_multiply_matpower_errors(graph):
    damping = DampingFunc(0.5)
    factor = _factor_with_cov(np.eye(2), [(-1, damping)])
    sparse = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([0]), tf.constant([2, 2]))
    with pytest.raises(ValueError, match="IndexedSlices"):
        factor.left_multiply_matpower(sparse, -1, damping)
    with pytest.raises(ValueError, match="rank 2"):
        factor.left_multiply_matpower(tf.ones([2]), -1, damping)
    with pytest.raises(ValueError, match="rank 2"):
        factor.right_multiply_matpower(tf.ones([2, 2, 1]), 1, damping)


def test_diagonal_factor_products_and_dense_cov(graph, rng):
    grads = tf.constant(rng.randn(2, 3), tf.float32)
    factor = ff.NaiveDiagonalFactor((grads,), 1)
    factor.instantiate_cov_variables()
    factor.register_matpower(-1, DampingFunc(0.1))  # no-op
    factor.instantiate_inv_variables()  # no-op
    assert factor.make_inverse_update_ops() == []
    diag = rng.rand(6, 1) + 0.5
    factor._cov = tf.constant(diag, tf.float32)
    x = rng.randn(6, 1)
    sparse = tf.IndexedSlices(
        tf.constant(rng.randn(2, 1), tf.float32),
        tf.constant([1, 4]),
        tf.constant([6, 1]),
    )
    damping = DampingFunc(tf.constant(0.5))
    with tf.Session() as sess:
        dense, power, inverse, sparse_inverse = sess.run(
            [
                factor.get_cov(),
                factor.left_multiply_matpower(tf.constant(x, tf.float32), 2, damping),
                factor.left_multiply_matpower(tf.constant(x, tf.float32), -1, damping),
                factor.left_multiply_matpower(sparse, -1, damping),
            ]
        )
        sparse_values = sess.run(sparse.values)
    np.testing.assert_allclose(dense, np.diag(diag[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(power, (diag + 0.5) ** 2 * x, rtol=1e-5)
    np.testing.assert_allclose(inverse, x / (diag + 0.5), rtol=1e-5)
    np.testing.assert_allclose(
        sparse_inverse.values, sparse_values / (diag[[1, 4]] + 0.5), rtol=1e-5
    )
    with pytest.raises(ValueError, match="shape"):
        factor.left_multiply_matpower(tf.ones([3, 2]), -1, damping)
    with pytest.raises(NotImplementedError):
        factor.right_multiply_matpower(tf.ones([6, 1]), -1, damping)


def test_diagonal_factor_broadcasts_vector_diagonal_over_columns(graph):
    factor = ff.EmbeddingInputKroneckerFactor((tf.constant([0, 1]),), 3)
    factor._cov = tf.constant([1.0, 2.0, 4.0])
    x = np.arange(6.0).reshape(3, 2)
    with tf.Session() as sess:
        result = sess.run(
            factor.left_multiply_matpower(
                tf.constant(x, tf.float32), -1, DampingFunc(0.0)
            )
        )
    np.testing.assert_allclose(result, x / np.array([[1.0], [2.0], [4.0]]))
