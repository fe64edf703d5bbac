"""Non-finite values never reach the weights or the K-FAC statistics.

A NaN/Inf injected in the inputs, in the gradients or in a factor leaves the
weights, velocities and factor moving averages exactly as they were for that
step (policy "skip", the default) and is counted; policy "raise" makes the
step fail with a message naming the culprit. Inverses of rank-deficient or
corrupted factors stay finite; float64 models work and mixed dtypes are
rejected at registration.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import kfac
from kfac.ops import fisher_factors as ff
from kfac.ops import utils

BATCH, IN, HIDDEN, OUT = 8, 3, 4, 3


def _data(seed=0, dtype=np.float32):
    rng = np.random.RandomState(seed)
    return (rng.randn(BATCH, IN).astype(dtype), rng.randint(0, OUT, size=BATCH))


class Mlp(object):
    """2-layer tanh MLP with fed inputs/labels, registered layers and an optimizer.

    `grad_scale` multiplies the gradients handed to `apply_gradients` (feed NaN
    or Inf to corrupt only the gradients).
    """

    def __init__(self, dtype=tf.float32, estimation_mode="exact", seed=0,
                 adapt_damping=False, learning_rate=None, **optimizer_kwargs):
        rng = np.random.RandomState(seed)
        self.x = tf.placeholder(dtype, [BATCH, IN], name="x")
        self.labels = tf.placeholder(tf.int64, [BATCH], name="labels")
        self.w1 = tf.get_variable("w1", initializer=tf.constant(
            0.5 * rng.randn(IN, HIDDEN), dtype))
        self.b1 = tf.get_variable("b1", [HIDDEN], dtype, tf.zeros_initializer())
        self.w2 = tf.get_variable("w2", initializer=tf.constant(
            0.5 * rng.randn(HIDDEN, OUT), dtype))
        self.b2 = tf.get_variable("b2", [OUT], dtype, tf.zeros_initializer())
        pre1 = tf.matmul(self.x, self.w1) + self.b1
        hidden = tf.tanh(pre1)
        self.logits = tf.matmul(hidden, self.w2) + self.b2
        self.loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self.labels, logits=self.logits))
        self.layer_collection = kfac.LayerCollection()
        self.layer_collection.register_fully_connected((self.w1, self.b1), self.x, pre1)
        self.layer_collection.register_fully_connected(
            (self.w2, self.b2), hidden, self.logits)
        self.layer_collection.register_categorical_predictive_distribution(
            self.logits, targets=self.labels)
        self.global_step = tf.train.get_or_create_global_step()
        optimizer_kwargs.setdefault("momentum", 0.9)
        if learning_rate is None:  # "use 1.0 with qmodel"
            qmodel = optimizer_kwargs.get("momentum_type") == "qmodel"
            learning_rate = 1.0 if qmodel else 0.1
        self.opt = kfac.KfacOptimizer(learning_rate, 0.9, 0.05, self.layer_collection,
                                      estimation_mode=estimation_mode, batch_size=BATCH,
                                      **optimizer_kwargs)
        if adapt_damping:
            self.opt.set_damping_adaptation_params(
                True, self.x, lambda _: self.loss, damping_adaptation_interval=1)
        (_, self.cov_update_op, _, self.inv_update_op, _,
         _) = self.opt.make_ops_and_vars()
        self.grad_scale = tf.placeholder_with_default(tf.constant(1.0, dtype), [])
        if adapt_damping:
            self.train_op = self.opt.minimize(self.loss, global_step=self.global_step)
        else:
            grads_and_vars = self.opt.compute_gradients(self.loss)
            self.train_op = self.opt.apply_gradients(
                [(grad * self.grad_scale, var) for grad, var in grads_and_vars],
                global_step=self.global_step)
        self.params = [self.w1, self.b1, self.w2, self.b2]
        self.velocities = [self.opt.get_slot(var, "velocity") for var in self.params]
        factors = list(self.layer_collection.get_factors())
        self.covs = [factor.get_cov_var() for factor in factors]
        self.inverses = [
            var for factor in self.layer_collection.get_factors()
            for var in factor._matpower_by_exp_and_damping.values()]

    def feed(self, x, labels, grad_scale=None):
        feed = {self.x: x, self.labels: labels}
        if grad_scale is not None:
            feed[self.grad_scale] = grad_scale
        return feed

    def state(self, sess):
        """Every variable the step or the factors may write."""
        return sess.run(self.params + self.velocities + self.covs + self.inverses)

    def train_round(self, sess, feed):
        sess.run(self.cov_update_op, feed)
        sess.run(self.inv_update_op)
        sess.run(self.train_op, feed)


def _assert_same(before, after):
    assert len(before) == len(after)
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)


def _all_finite(values):
    return all(np.all(np.isfinite(value)) for value in values)


# --------------------------------------------------------------------------
# Injected NaN/Inf: skipped, counted, and training goes on as if it never was.


def test_nan_input_batch_is_skipped_counted_and_forgotten(tf_behavior):
    x0, y0 = _data(0)
    x1, y1 = _data(1)
    bad_x = x1.copy()
    bad_x[2, 1] = np.nan
    with tf.Graph().as_default():
        model = Mlp()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            model.train_round(sess, model.feed(x0, y0))
            before = model.state(sess)
            model.train_round(sess, model.feed(bad_x, y1))
            after = model.state(sess)
            skipped_steps, skipped_factor_updates, step = sess.run(
                [model.opt.skipped_steps, model.opt.skipped_factor_updates,
                 model.global_step])
            # A clean batch afterwards trains normally.
            model.train_round(sess, model.feed(x1, y1))
            resumed = sess.run(model.params)
    _assert_same(before, after)
    assert _all_finite(after)
    assert skipped_steps == 1
    # All four factors saw non-finite estimates (the NaN reaches every layer).
    assert skipped_factor_updates == 4
    assert step == 2  # global_step counts the skipped step too

    # Same weights as a run that never saw the bad batch.
    with tf.Graph().as_default():
        model = Mlp()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            model.train_round(sess, model.feed(x0, y0))
            model.train_round(sess, model.feed(x1, y1))
            clean = sess.run(model.params)
    _assert_same(clean, resumed)


def test_inf_input_skips_the_step_and_only_the_affected_factor():
    """An Inf input saturates tanh: only the first layer's input factor and the
    step (its gradient is Inf·0 = NaN) are non-finite; the others update."""
    x0, y0 = _data(0)
    bad_x = x0.copy()
    bad_x[2, 1] = np.inf
    with tf.Graph().as_default():
        model = Mlp()
        factors = list(model.layer_collection.get_factors())
        input_factor = factors.index(model.layer_collection.fisher_blocks[
            (model.w1, model.b1)]._input_factor)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            model.train_round(sess, model.feed(x0, y0))
            params_before, covs_before = sess.run([model.params, model.covs])
            velocities_before = sess.run(model.velocities)
            model.train_round(sess, model.feed(bad_x, y0))
            params_after, covs_after = sess.run([model.params, model.covs])
            counts = sess.run([factor.num_skipped_updates for factor in factors])
            assert sess.run(model.opt.skipped_steps) == 1
            _assert_same(velocities_before, sess.run(model.velocities))
            assert _all_finite(sess.run(model.inverses))
    _assert_same(params_before, params_after)
    assert counts[input_factor] == 1 and sum(counts) == 1
    for index, (old, new) in enumerate(zip(covs_before, covs_after)):
        if index == input_factor:
            np.testing.assert_array_equal(old, new)
        else:
            assert np.all(np.isfinite(new)) and not np.array_equal(old, new)


@pytest.mark.parametrize("momentum_type, bad_scale", [
    ("regular", np.nan), ("regular", np.inf), ("adam", np.nan), ("qmodel", np.inf)])
def test_non_finite_gradients_leave_weights_and_velocities_unchanged(
        momentum_type, bad_scale):
    x0, y0 = _data(0)
    kwargs = dict(momentum_type=momentum_type)
    if momentum_type == "qmodel":
        kwargs["momentum"] = 0.0
    with tf.Graph().as_default():
        model = Mlp(**kwargs)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            model.train_round(sess, model.feed(x0, y0))
            before = model.state(sess)
            sess.run(model.train_op, model.feed(x0, y0, grad_scale=bad_scale))
            after = model.state(sess)
            counts = sess.run([model.opt.skipped_steps,
                               model.opt.skipped_factor_updates])
    _assert_same(before, after)
    assert counts == [1, 0]  # only the step was bad, not the factor statistics


def test_nan_factor_estimate_keeps_the_moving_average(tf_behavior):
    with tf.Graph().as_default():
        grads = tf.placeholder(tf.float32, [3])
        factor = ff.FullFactor((grads,), 1)
        factor.instantiate_cov_variables()
        update = factor.make_covariance_update_op(0.5)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            first = sess.run(update, {grads: [1.0, 2.0, 3.0]})
            skipped = sess.run(update, {grads: [1.0, np.nan, 3.0]})
            inf = sess.run(update, {grads: [np.inf, 0.0, 0.0]})
            stored, count = sess.run([factor.get_cov_var(), factor.num_skipped_updates])
    want = 0.5 * np.eye(3) + 0.5 * np.outer([1, 2, 3], [1, 2, 3])
    np.testing.assert_allclose(first, want, rtol=1e-6)
    # The op still evaluates to the (unchanged) cov.
    np.testing.assert_array_equal(skipped, first)
    np.testing.assert_array_equal(inf, first)
    np.testing.assert_array_equal(stored, first)
    assert count == 2


def test_multi_use_factor_guards_cov_and_cov_dt1(graph):
    rows = tf.placeholder(tf.float32, [4, 2])  # 2 uses x batch 2, use-major
    factor = ff.FullyConnectedMultiKF(((rows,),), num_uses=2)
    factor.register_cov_dt1()
    factor.instantiate_cov_variables()
    update = factor.make_covariance_update_op(0.0)
    data = np.arange(8, dtype=np.float32).reshape(4, 2)
    bad = data.copy()
    bad[3, 0] = np.nan
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(update, {rows: data})
        before = sess.run([factor.get_cov_var(), factor.get_cov_dt1()])
        sess.run(update, {rows: bad})
        after = sess.run([factor.get_cov_var(), factor.get_cov_dt1()])
        count = sess.run(factor.num_skipped_updates)
    _assert_same(before, after)
    np.testing.assert_allclose(before[0], data.T @ data / 4, rtol=1e-6)
    assert count == 2  # cov and cov_dt1


def test_corrupted_cov_never_reaches_the_inverses(tf_behavior):
    """A NaN cov (e.g. from a bad checkpoint) is not inverted into the inverses
    (Cholesky path: one inverse per factor), and the step stays finite."""
    x0, y0 = _data(0)
    with tf.Graph().as_default():
        model = Mlp()
        factors = list(model.layer_collection.get_factors())
        corrupt = [tf.assign(cov, tf.fill(tf.shape(cov), np.float32(np.nan)))
                   for cov in model.covs]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            model.train_round(sess, model.feed(x0, y0))
            inverses = sess.run(model.inverses)
            sess.run(corrupt)
            sess.run(model.inv_update_op)
            _assert_same(inverses, sess.run(model.inverses))
            counts = sess.run([f.num_skipped_updates for f in factors])
            sess.run(model.train_op, model.feed(x0, y0))
            assert _all_finite(sess.run(model.params))
    assert counts == [1, 1, 1, 1]


def test_eigen_path_keeps_inverses_of_a_corrupted_cov(graph):
    identity = tf.constant(np.eye(3, dtype=np.float32))
    factor = ff.FullyConnectedKroneckerFactor(((identity,),))
    factor.instantiate_cov_variables()
    for damping in (0.1, 0.2):  # two inverses: the eigen path
        factor.register_matpower(-1, _damping_func(damping))
    factor.instantiate_inv_variables()
    ops = factor.make_inverse_update_ops()
    assert len(ops) == 1
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        corrupted = [[1.0, np.inf, 0], [0, 1, 0], [0, 0, 1]]
        sess.run(tf.assign(factor.get_cov_var(), corrupted))
        sess.run(ops)
        values = sess.run(list(factor._matpower_by_exp_and_damping.values()))
        count = sess.run(factor.num_skipped_updates)
    for value in values:
        np.testing.assert_array_equal(value, np.eye(3))  # initial value kept
    assert count == 2


def _damping_func(value):
    return kfac.fisher_blocks.PackagedFunc(lambda: value, ("damping", value))


# --------------------------------------------------------------------------
# Policy "raise" and policy None.


def test_raise_policy_fails_naming_the_variables(tf_behavior):
    x0, y0 = _data(0)
    with tf.Graph().as_default():
        model = Mlp(non_finite_policy="raise")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            model.train_round(sess, model.feed(x0, y0))
            before = model.state(sess)
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match=r"non_finite_policy=raise.*w1 b1 w2 b2"):
                sess.run(model.train_op, model.feed(x0, y0, grad_scale=np.nan))
            _assert_same(before, model.state(sess))


def test_raise_policy_fails_on_a_bad_covariance_estimate():
    x0, y0 = _data(0)
    x0[0, 0] = np.nan
    with tf.Graph().as_default():
        model = Mlp(non_finite_policy="raise")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            before = sess.run(model.covs)
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match="covariance estimate of factor.*ff_fckron"):
                sess.run(model.cov_update_op, model.feed(x0, y0))
            _assert_same(before, sess.run(model.covs))


def test_policy_none_applies_the_step_unchecked():
    x0, y0 = _data(0)
    with tf.Graph().as_default():
        model = Mlp(non_finite_policy=None)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            model.train_round(sess, model.feed(x0, y0))
            sess.run(model.train_op, model.feed(x0, y0, grad_scale=np.nan))
            assert np.isnan(sess.run(model.w1)).all()
            assert sess.run(model.opt.skipped_steps) == 0


# --------------------------------------------------------------------------
# Divergence in "gradients" mode (sampling), damping adaptation.


def test_nan_logits_in_gradients_mode_skip_instead_of_crashing():
    """The original crashed inside the sampling op ("label out of range")."""
    x0, y0 = _data(0)
    bad_x = x0.copy()
    bad_x[:, 0] = np.nan
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        model = Mlp(estimation_mode="gradients")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            model.train_round(sess, model.feed(x0, y0))
            before = model.state(sess)
            model.train_round(sess, model.feed(bad_x, y0))
            _assert_same(before, model.state(sess))
            assert sess.run(model.opt.skipped_steps) == 1
            assert sess.run(model.opt.skipped_factor_updates) == 4


def test_nan_loss_with_damping_adaptation_keeps_damping_state_finite(tf_behavior):
    x0, y0 = _data(0)
    bad_x = x0.copy()
    bad_x[1, 1] = np.nan
    with tf.Graph().as_default():
        model = Mlp(adapt_damping=True)
        state = [model.opt.damping, model.opt._prev_loss, model.opt._q_model_change,
                 model.opt._rho]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            model.train_round(sess, model.feed(x0, y0))
            model.train_round(sess, model.feed(x0, y0))
            # The inverses with the damping adapted by the last step.
            sess.run(model.inv_update_op)
            before = model.state(sess) + sess.run(state[:3])
            model.train_round(sess, model.feed(bad_x, y0))
            after = model.state(sess) + sess.run(state[:3])
            assert sess.run(model.opt.skipped_steps) == 1
    _assert_same(before, after)


# --------------------------------------------------------------------------
# Inverses of rank-deficient factors.


@pytest.mark.parametrize("method", ["cholesky", "matrix_inverse", "eig"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_deficient_inverse_is_finite_for_every_method(method, dtype):
    rng = np.random.RandomState(3)
    rows = rng.randn(2, 6).astype(dtype)  # batch 2 < dimension 6
    cov = rows.T @ rows / 2
    saved = utils.POSDEF_INV_METHOD
    try:
        utils.set_global_constants(posdef_inv_method=method)
        with tf.Graph().as_default(), tf.Session() as sess:
            inverses = sess.run([utils.posdef_inv(tf.constant(cov), d)
                                 for d in (0.0, 1e-8, 1e-3)])
    finally:
        utils.set_global_constants(posdef_inv_method=saved)
    assert _all_finite(inverses)
    # Where the damped matrix is well conditioned the inverse is accurate.
    want = np.linalg.inv(cov.astype(np.float64) + 1e-3 * np.eye(6))
    np.testing.assert_allclose(inverses[2], want, rtol=2e-2 if dtype == np.float32
                               else 1e-8, atol=1e-2 if dtype == np.float32 else 1e-8)


def test_eigen_path_and_diagonal_factor_with_zero_damping_are_finite(graph):
    rows = np.zeros((2, 3), np.float32)
    rows[:, 0] = [1.0, 2.0]  # rank one
    factor = ff.FullyConnectedKroneckerFactor(((tf.constant(rows),),))
    factor.instantiate_cov_variables()
    for damping in (0.0, 1e-8):
        factor.register_matpower(-1, _damping_func(damping))
    factor.instantiate_inv_variables()
    diagonal = ff.NaiveDiagonalFactor(((tf.constant([0.0, 1.0, 0.0]),),), 1)
    diagonal.instantiate_cov_variables()
    diagonal_update = diagonal.make_covariance_update_op(0.0)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(factor.make_covariance_update_op(0.0))
        sess.run(factor.make_inverse_update_ops())
        inverses = sess.run(list(factor._matpower_by_exp_and_damping.values()))
        sess.run(diagonal_update)
        diagonal_inverse = sess.run(diagonal.left_multiply_matpower(
            tf.ones([3, 1]), -1, _damping_func(0.0)))
        count = sess.run(factor.num_skipped_updates)
    assert _all_finite(inverses) and count == 0
    # The non-degenerate direction is inverted exactly: cov[0, 0] = 2.5.
    np.testing.assert_allclose(inverses[1][0, 0], 1 / (2.5 + 1e-8), rtol=1e-5)
    assert np.all(np.isfinite(diagonal_inverse))
    assert diagonal_inverse[1, 0] == pytest.approx(1.0)


# --------------------------------------------------------------------------
# Numerical types.


@pytest.mark.parametrize("momentum_type, adapt_damping", [
    ("regular", False), ("adam", True), ("qmodel", True)])
def test_float64_model_trains(momentum_type, adapt_damping):
    x0, y0 = _data(0, np.float64)
    kwargs = dict(momentum_type=momentum_type, adapt_damping=adapt_damping)
    if momentum_type == "qmodel":
        kwargs["momentum"] = 0.0
    with tf.Graph().as_default():
        model = Mlp(dtype=tf.float64, **kwargs)
        assert all(cov.dtype.base_dtype == tf.float64 for cov in model.covs)
        assert all(inv.dtype.base_dtype == tf.float64 for inv in model.inverses)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            initial = sess.run(model.loss, model.feed(x0, y0))
            for _ in range(5):
                model.train_round(sess, model.feed(x0, y0))
            final = sess.run(model.loss, model.feed(x0, y0))
            assert sess.run(model.opt.skipped_steps) == 0
    assert np.isfinite(final) and final < initial


def test_float64_and_float32_steps_agree():
    x0, y0 = _data(0)
    params = {}
    for dtype in (tf.float32, tf.float64):
        with tf.Graph().as_default():
            model = Mlp(dtype=dtype)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                for _ in range(2):
                    model.train_round(sess, model.feed(x0.astype(dtype.as_numpy_dtype),
                                                       y0))
                params[dtype] = sess.run(model.params)
    for p32, p64 in zip(params[tf.float32], params[tf.float64]):
        assert p64.dtype == np.float64
        np.testing.assert_allclose(p32, p64, rtol=1e-4, atol=1e-5)


def test_mixed_dtypes_are_rejected_at_registration(graph):
    w32 = tf.get_variable("w32", [3, 2], tf.float32)
    w64 = tf.get_variable("w64", [2, 2], tf.float64)
    x32 = tf.zeros([4, 3], tf.float32)
    x64 = tf.zeros([4, 2], tf.float64)
    lc = kfac.LayerCollection()
    lc.register_fully_connected(w32, x32, tf.matmul(x32, w32))
    with pytest.raises(ValueError, match="must share one dtype.*w64.*float64.*w32"):
        lc.register_fully_connected(w64, x64, tf.matmul(x64, w64))
    assert len(lc.fisher_blocks) == 1  # nothing inserted
