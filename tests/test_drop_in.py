"""Programs that ran on the original library run here, with the same numbers.

Each test is one thing the original accepted and an earlier version of this
port refused, reshaped or got wrong (issue #12); the numbers are compared with
dense numpy computations (test_fisher_blocks_support, optimizer_reference).
"""

import warnings

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from test_fisher_blocks_support import FakeLayerCollection
from test_fisher_blocks_support import apply_dense
from test_fisher_blocks_support import build_block_updates
from test_fisher_blocks_support import kron_damped
from test_fisher_blocks_support import run_updates
from test_fisher_blocks_support import second_moment
from test_fisher_blocks_support import solve_dense
from test_fisher_blocks_support import with_ones
from tolerances import assert_close

import kfac
from kfac.ops import fisher_blocks as fb
from kfac.ops import fisher_factors as ff
from kfac.ops import layer_collection as lc_lib

pytestmark = pytest.mark.usefixtures("graph")

_DAMPING = 0.1


# ----------------------------------------------------------------------------
# Bias shapes: [out], [1, out] and [out, 1] come back in the shape given.


def _fc_block_products(block_cls, bias_shape, rng):
    """The block's products on a `(weights, bias)` vector with that bias shape."""
    inputs, grads = rng.randn(6, 3), rng.randn(6, 2)
    block = block_cls(FakeLayerCollection(), has_bias=True)
    block.register_additional_tower(tf.constant(inputs), tf.constant(grads))
    exps = (-1, 2) if block_cls is fb.FullyConnectedKFACBasicFB else (-1,)
    cov_ops, inv_ops = build_block_updates(
        block, ((tf.constant(grads),),), _DAMPING, exps=exps
    )
    weights, bias = rng.randn(3, 2), rng.randn(2)
    vector = (tf.constant(weights), tf.constant(bias.reshape(bias_shape)))
    products = [
        block.multiply(vector),
        block.multiply_inverse(vector),
        block.multiply_matpower(vector, 2 if len(exps) == 2 else -1),
    ]
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        values = sess.run(products)
    mat2d = np.concatenate([weights, bias[None]], axis=0)
    return inputs, grads, mat2d, values


def _mat2d(value):
    return np.concatenate([value[0], value[1].reshape(1, -1)], axis=0)


@pytest.mark.parametrize("bias_shape", [(2,), (1, 2), (2, 1)])
def test_kronecker_products_keep_the_bias_shape(bias_shape, rng):
    inputs, grads, mat2d, values = _fc_block_products(
        fb.FullyConnectedKFACBasicFB, bias_shape, rng
    )
    damped = kron_damped(
        second_moment(with_ones(inputs)), second_moment(grads), _DAMPING
    )
    expected = [
        apply_dense(damped, mat2d),
        solve_dense(damped, mat2d),
        apply_dense(damped @ damped, mat2d),
    ]
    for value, want in zip(values, expected):
        assert value[0].shape == (3, 2) and value[1].shape == bias_shape
        np.testing.assert_allclose(_mat2d(value), want, rtol=1e-9)


@pytest.mark.parametrize("bias_shape", [(1, 2), (2, 1)])
def test_diagonal_products_keep_the_bias_shape(bias_shape, rng):
    inputs, grads, mat2d, values = _fc_block_products(
        fb.FullyConnectedDiagonalFB, bias_shape, rng
    )
    rows = with_ones(inputs)
    diagonal = np.mean(
        [np.outer(row, grad) ** 2 for row, grad in zip(rows, grads)], axis=0
    )
    product, inverse = (diagonal + _DAMPING) * mat2d, mat2d / (diagonal + _DAMPING)
    for value, want in zip(values, [product, inverse, inverse]):
        assert value[1].shape == bias_shape
        np.testing.assert_allclose(_mat2d(value), want, rtol=1e-9)


@pytest.mark.parametrize("bias_shape", [(1, 3), (3, 1)])
def test_conv_products_keep_the_bias_shape(bias_shape, rng):
    """A conv block gives the same numbers for a `[1, out]` bias as for `[out]`."""
    images, grads = rng.randn(2, 4, 4, 2), rng.randn(2, 4, 4, 3)
    filters, bias = rng.randn(2, 2, 2, 3), rng.randn(3)
    results = {}
    for shape in [(3,), bias_shape]:
        params = (tf.constant(filters), tf.constant(bias.reshape(shape)))
        block = fb.ConvKFCBasicFB(FakeLayerCollection(), params, "SAME")
        block.register_additional_tower(tf.constant(images), tf.constant(grads))
        cov_ops, inv_ops = build_block_updates(
            block, ((tf.constant(grads),),), _DAMPING
        )
        with tf.Session() as sess:
            run_updates(sess, cov_ops, inv_ops)
            results[shape] = sess.run(block.multiply_inverse(params))
    plain, shaped = results[(3,)], results[bias_shape]
    assert shaped[1].shape == bias_shape and shaped[0].shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(shaped[0], plain[0])
    np.testing.assert_array_equal(shaped[1].ravel(), plain[1])


@pytest.mark.parametrize("bias_shape", [(1, 2), (2, 1)])
def test_optimizer_step_with_a_matrix_bias_equals_numpy(bias_shape, rng):
    """`tf.matmul(x, w) + b` with `b` of shape [1, out]: one K-FAC step."""
    x, targets = rng.randn(8, 3), rng.randn(8, 2)
    w0, b0 = rng.randn(3, 2), rng.randn(2)
    lr = 0.5
    w = tf.get_variable("w", initializer=w0)
    b = tf.get_variable("b", initializer=b0.reshape(bias_shape))
    inputs = tf.constant(x)
    outputs = tf.matmul(inputs, w) + tf.reshape(b, [1, 2])
    lc = kfac.LayerCollection()
    lc.register_fully_connected((w, b), inputs, outputs)
    lc.register_normal_predictive_distribution(outputs, var=0.5, targets=targets)
    loss = tf.reduce_sum(tf.square(outputs - targets)) / 8
    optimizer = kfac.KfacOptimizer(
        lr, 0.0, _DAMPING, lc, momentum=0.0, estimation_mode="empirical"
    )
    train_op = optimizer.minimize(loss, var_list=[w, b])
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(optimizer.cov_update_op)
        sess.run(optimizer.inv_update_op)
        sess.run(train_op)
        new_w, new_b = sess.run([w, b])
    residuals = 2 * (x @ w0 + b0 - targets)  # per-row gradient of the summed NLL
    damped = kron_damped(
        second_moment(with_ones(x)), second_moment(residuals), _DAMPING
    )
    gradient = with_ones(x).T @ residuals / 8
    step = solve_dense(damped, gradient)
    assert new_b.shape == bias_shape
    np.testing.assert_allclose(new_w, w0 - lr * step[:-1], rtol=1e-9)
    np.testing.assert_allclose(new_b.ravel(), b0 - lr * step[-1], rtol=1e-9)


# ----------------------------------------------------------------------------
# register_fully_connected on ranks the original ran.


@pytest.mark.parametrize("has_bias", [False, True])
def test_fully_connected_registration_of_a_1x1_convolution(has_bias, rng):
    """Kernel [1, 1, in, out], 4-D inputs and outputs: every pixel is one row."""
    images, targets = rng.randn(3, 2, 2, 4), rng.randn(3, 2, 2, 2)
    kernel0, bias0 = rng.randn(1, 1, 4, 2), rng.randn(2)
    lr = 0.3
    kernel = tf.get_variable("kernel", initializer=kernel0)
    inputs = tf.constant(images)
    outputs = tf.nn.conv2d(inputs, kernel, [1, 1, 1, 1], "SAME")
    params = kernel
    if has_bias:
        bias = tf.get_variable("bias", initializer=bias0)
        outputs, params = outputs + bias, (kernel, bias)
    lc = kfac.LayerCollection()
    lc.register_fully_connected(params, inputs, outputs)
    lc.register_normal_predictive_distribution(outputs, var=0.5, targets=targets)
    loss = tf.reduce_sum(tf.square(outputs - targets)) / 3
    optimizer = kfac.KfacOptimizer(
        lr, 0.0, _DAMPING, lc, momentum=0.0, estimation_mode="empirical"
    )
    train_op = optimizer.minimize(loss)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run([optimizer.cov_update_op])
        sess.run(optimizer.inv_update_op)
        sess.run(train_op)
        new_kernel = sess.run(kernel)
    rows = images.reshape(-1, 4)
    inputs = with_ones(rows) if has_bias else rows
    outputs0 = rows @ kernel0.reshape(4, 2) + (bias0 if has_bias else 0.0)
    residuals = 2 * (outputs0 - targets.reshape(-1, 2))
    damped = kron_damped(second_moment(inputs), second_moment(residuals), _DAMPING)
    step = solve_dense(damped, inputs.T @ residuals / 3)
    assert_close(new_kernel.reshape(4, 2), kernel0.reshape(4, 2) - lr * step[:4], 1e-6)


def test_reuse_with_an_invalid_registration_keeps_the_block():
    """The original's test: a 1x1 kernel registered as fully connected, twice."""
    inputs, outputs = tf.ones([2, 5, 5, 10]), tf.zeros([2, 5, 5, 3])
    w = tf.get_variable("w", [1, 1, 10, 3])
    b = tf.get_variable("b", [3])
    lc = kfac.LayerCollection()
    lc.register_fully_connected(w, inputs, outputs)
    assert lc.fisher_blocks[w].num_registered_towers == 1
    assert lc.fisher_blocks[w].num_registered_minibatches == 1
    with pytest.raises(KeyError):
        lc.register_fully_connected((w, b), inputs, outputs, reuse=True)
    assert (w, b) not in lc.fisher_blocks
    lc.register_fully_connected(w, inputs, outputs, reuse=True)
    assert lc.fisher_blocks[w].num_registered_towers == 2


def test_bookkeeping_registrations_on_constants():
    """The original's registration test: constants of any rank, 11 blocks."""
    lc = kfac.LayerCollection()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lc.register_fully_connected(tf.constant(1), tf.constant(2), tf.constant(3))
        lc.register_fully_connected(
            tf.constant(1), tf.constant(2), tf.constant(3), approx="diagonal"
        )
        for approx in (None, "diagonal"):
            lc.register_conv2d(
                params=tf.ones((2, 3, 4, 5)),
                strides=[1, 1, 1, 1],
                padding="SAME",
                inputs=tf.ones((1, 2, 3, 4)),
                outputs=tf.ones((1, 1, 1, 5)),
                approx=approx,
            )
        lc.register_separable_conv2d(
            depthwise_params=tf.ones((3, 3, 1, 2)),
            pointwise_params=tf.ones((1, 1, 2, 4)),
            inputs=tf.ones((32, 5, 5, 1)),
            depthwise_outputs=tf.ones((32, 5, 5, 2)),
            pointwise_outputs=tf.ones((32, 5, 5, 4)),
            strides=[1, 1, 1, 1],
            padding="SAME",
        )
        lc.register_convolution(
            params=tf.ones((3, 3, 1, 8)),
            inputs=tf.ones((32, 5, 5, 1)),
            outputs=tf.ones((32, 5, 5, 8)),
            padding="SAME",
        )
        lc.register_generic(tf.constant(5), 16, approx="full")
        lc.register_generic(tf.constant(6), 16, approx="diagonal")
        lc.register_fully_connected_multi(
            tf.constant(1),
            (tf.constant(2), tf.constant(3)),
            (tf.constant(4), tf.constant(5)),
        )
        lc.register_embedding_multi(
            tf.constant((1,)),
            (tf.constant(2), tf.constant(3)),
            (tf.constant(4), tf.constant(5)),
        )
    assert len(lc.get_blocks()) == 11
    messages = [str(w.message) for w in caught]
    assert all(issubclass(w.category, lc_lib.RegistrationWarning) for w in caught)
    assert any("`outputs` has shape (1, 1, 1, 5)" in m for m in messages)
    assert any("`params` must have rank at least 2" in m for m in messages)


def test_widths_that_disagree_are_still_errors():
    lc = kfac.LayerCollection()
    with pytest.raises(ValueError, match=r"`inputs` has shape \(2, 5, 5, 9\)"):
        lc.register_fully_connected(
            tf.get_variable("w", [1, 1, 10, 3]),
            tf.ones([2, 5, 5, 9]),
            tf.ones([2, 5, 5, 3]),
        )
    with pytest.raises(ValueError, match=r"`inputs\[1\]` has shape \(5, 6, 7, 8\)"):
        lc.register_conv2d_multi(
            params=tf.ones((2, 3, 4, 5)),
            strides=[1, 1, 1, 1],
            padding="SAME",
            inputs=(tf.ones((1, 2, 3, 4)), tf.ones((5, 6, 7, 8))),
            outputs=(tf.ones((1, 2, 3, 5)), tf.ones((5, 6, 7, 5))),
        )
    assert not lc.fisher_blocks


# ----------------------------------------------------------------------------
# instantiate_inv_variables creates every variable the inverse updates use.


class _ConstantCovFactor(ff.InverseProvidingFactor):
    """The original tests' pattern: `_cov` assigned a constant, no cov variable."""

    def __init__(self, cov):
        super(_ConstantCovFactor, self).__init__()
        self._cov = tf.constant(cov)

    _var_scope = "constant_cov"
    _num_sources = 1
    _num_towers = 1
    _dtype = tf.float64

    @property
    def _cov_shape(self):
        return self._cov.shape.as_list()

    def _compute_new_cov(self, source, tower):
        raise NotImplementedError

    def _get_data_device(self, tower):
        return None


def _register_all_kinds(factor):
    factor.register_inverse(fb._package_func(lambda: 0.1, 0.1))
    factor.register_matpower(-0.5, fb._package_func(lambda: 0.2, 0.2))
    factor.register_damped_inverse(0.3)


def test_inverse_variables_exist_before_the_initializer_runs(rng):
    matrix = rng.randn(6, 3)
    cov = matrix.T @ matrix / 6
    constant = _ConstantCovFactor(cov)
    dense = ff.FullyConnectedKroneckerFactor(((tf.constant(matrix),),))
    series = ff.FullyConnectedMultiKF(((tf.constant(matrix),),), num_uses=2)
    series.register_cov_dt1()
    series.register_option1quants(fb._package_func(lambda: 0.1, 0.1))
    series.register_option2quants(fb._package_func(lambda: 0.1, 0.1))
    for factor in (dense, series):
        factor.instantiate_cov_variables()
    for factor in (constant, dense, series):
        _register_all_kinds(factor)
        factor.instantiate_inv_variables()
    made = set(tf.global_variables())
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for factor in (dense, series):
            sess.run(factor.make_covariance_update_op(0.0))
        ops = [factor.make_inverse_update_ops() for factor in (constant, dense, series)]
        assert set(tf.global_variables()) == made  # nothing created after init
        sess.run(ops)  # would fail on an uninitialised variable
        inverse, root, damped = sess.run(
            [
                constant.get_inverse(fb._package_func(lambda: 0.1, 0.1)),
                constant.get_matpower(-0.5, fb._package_func(lambda: 0.2, 0.2)),
                constant.get_damped_inverse(0.3),
            ]
        )
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    np.testing.assert_allclose(inverse, np.linalg.inv(cov + 0.1 * np.eye(3)), rtol=1e-9)
    np.testing.assert_allclose(
        root, (eigenvectors / np.sqrt(eigenvalues + 0.2)) @ eigenvectors.T, rtol=1e-9
    )
    np.testing.assert_allclose(damped, np.linalg.inv(cov + 0.3 * np.eye(3)), rtol=1e-9)


def test_zero_debias_variables_are_made_with_the_covariance(rng, monkeypatch):
    monkeypatch.setattr(ff, "ZERO_DEBIAS", True)
    rows = rng.randn(5, 2)
    factor = ff.FullyConnectedKroneckerFactor(((tf.constant(rows),),))
    factor.instantiate_cov_variables()
    made = set(tf.global_variables())
    updates = [factor.make_covariance_update_op(0.5) for _ in range(2)]
    assert set(tf.global_variables()) == made  # both ops share one debias state
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        first = sess.run(updates[0])
        second = sess.run(updates[1])
    # Debiased: the identity initialisation never enters the average.
    np.testing.assert_allclose(first, rows.T @ rows / 5, rtol=1e-12)
    np.testing.assert_allclose(second, rows.T @ rows / 5, rtol=1e-12)


# ----------------------------------------------------------------------------
# IndexedSlices whose dense_shape is a list or a tuple.


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape_type", [list, tuple])
@pytest.mark.parametrize("multi_use", [False, True])
def test_embedding_products_accept_a_python_dense_shape(
    shape_type, multi_use, rng, dtype
):
    # The input factor follows the gradients' dtype (float32 in the original).
    vocab, dim = 5, 2
    ids = np.array([0, 3, 3, 1])
    grads = rng.randn(4, dim).astype(dtype)
    if multi_use:
        block = fb.EmbeddingKFACMultiIndepFB(FakeLayerCollection(), vocab, num_uses=1)
        block.register_additional_tower([tf.constant(ids)], [tf.constant(grads)])
        grads_list = (((tf.constant(grads),),),)
    else:
        block = fb.EmbeddingKFACFB(FakeLayerCollection(), vocab)
        block.register_additional_tower(tf.constant(ids), tf.constant(grads))
        grads_list = ((tf.constant(grads),),)
    cov_ops, inv_ops = build_block_updates(block, grads_list, _DAMPING)
    rows, values = np.array([1, 3]), rng.randn(2, dim).astype(dtype)
    vector = tf.IndexedSlices(
        tf.constant(values), tf.constant(rows), dense_shape=shape_type([vocab, dim])
    )
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        product, inverse = sess.run(
            [block.multiply(vector), block.multiply_inverse(vector)]
        )
    input_diag = np.bincount(ids, minlength=vocab) / 4.0
    damped = kron_damped(np.diag(input_diag), second_moment(grads), _DAMPING)
    dense = np.zeros((vocab, dim))
    dense[rows] = values
    np.testing.assert_array_equal(product.indices, rows)
    np.testing.assert_array_equal(product.dense_shape, [vocab, dim])
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert product.values.dtype == inverse.values.dtype == dtype
    assert_close(product.values, apply_dense(damped, dense)[rows], rtol)
    assert_close(inverse.values, solve_dense(damped, dense)[rows], rtol)


def test_cross_replica_mean_is_the_tensor_itself():
    tensor = tf.constant([1.0, 2.0])
    assert kfac.utils.cross_replica_mean(tensor) is tensor
    assert kfac.utils.cross_replica_mean(tensor, name="mean") is tensor


# ----------------------------------------------------------------------------
# Targets whose shape cannot match the predictive distribution.


@pytest.mark.parametrize(
    "register, inputs_shape, targets_shape, pattern",
    [
        (
            "register_multi_bernoulli_predictive_distribution",
            (4, 3),
            (4, 2),
            r"`targets` has shape \(4, 2\) but `logits` has shape \(4, 3\)",
        ),
        (
            "register_normal_predictive_distribution",
            (4, 1),
            (4,),
            r"`targets` has shape \(4,\) but `mean` has shape \(4, 1\)",
        ),
    ],
)
def test_targets_of_the_wrong_shape_are_refused(
    register, inputs_shape, targets_shape, pattern
):
    lc = kfac.LayerCollection()
    inputs = tf.zeros(inputs_shape)
    with pytest.raises(ValueError, match=pattern):
        getattr(lc, register)(inputs, targets=tf.zeros(targets_shape))
    assert not lc.losses
    getattr(lc, register)(inputs, targets=tf.zeros(inputs_shape))
    assert len(lc.losses) == 1


def test_categorical_targets_shaped_like_the_logits_warn():
    lc = kfac.LayerCollection()
    logits = tf.zeros([4, 3])
    with pytest.warns(
        lc_lib.RegistrationWarning,
        match=r"`targets` has shape \(4, 3\) but `logits` has shape \(4, 3\): "
        r"expected targets of shape \(4,\)",
    ):
        lc.register_categorical_predictive_distribution(
            logits, targets=tf.zeros([4, 3])
        )
    lc.register_categorical_predictive_distribution(
        logits, targets=tf.zeros([4], tf.int32)
    )
    assert len(lc.losses) == 2


def _fully_connected_step(images, targets, kernel0, hand_reshaped):
    """One K-FAC step of `kernel`, registered on 4-D tensors or on rows."""
    with tf.Graph().as_default():
        kernel = tf.get_variable("kernel", initializer=kernel0)
        if hand_reshaped:
            inputs = tf.reshape(tf.constant(images), [-1, kernel0.shape[2]])
            outputs = tf.matmul(inputs, tf.reshape(kernel, kernel0.shape[2:]))
            targets = targets.reshape(-1, kernel0.shape[3])
        else:
            inputs = tf.constant(images)
            outputs = tf.nn.conv2d(inputs, kernel, [1, 1, 1, 1], "SAME")
        lc = kfac.LayerCollection()
        lc.register_fully_connected(kernel, inputs, outputs)
        lc.register_normal_predictive_distribution(outputs, targets=targets)
        optimizer = kfac.KfacOptimizer(
            0.3, 0.0, _DAMPING, lc, momentum=0.0, estimation_mode="empirical"
        )
        train_op = optimizer.minimize(tf.reduce_sum(tf.square(outputs - targets)))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(optimizer.cov_update_op)
            sess.run(optimizer.inv_update_op)
            sess.run(train_op)
            return sess.run(kernel)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_4d_registration_equals_the_hand_reshaped_one(rng):
    images, targets = rng.randn(3, 2, 2, 4), rng.randn(3, 2, 2, 2)
    kernel0 = rng.randn(1, 1, 4, 2)
    on_tensors = _fully_connected_step(images, targets, kernel0, False)
    on_rows = _fully_connected_step(images, targets, kernel0, True)
    assert np.abs(on_tensors - kernel0).max() > 1e-3  # a real step
    np.testing.assert_allclose(on_tensors, on_rows, rtol=1e-12, atol=1e-14)
