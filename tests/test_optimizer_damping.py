"""Tests of Levenberg-Marquardt damping adaptation (Martens & Grosse 2015, §6.5)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from optimizer_reference import SoftmaxRegression
from optimizer_reference import categorical_output_factor
from optimizer_reference import input_factor
from optimizer_reference import kronecker_precondition
from optimizer_reference import mat2d
from optimizer_reference import softmax_regression_data
from optimizer_reference import softmax_regression_gradient
from optimizer_reference import split_mat2d

import kfac
from kfac.ops._optimizer import damping_adaptation


def _lm_rule(damping, rho, omega, min_damping):
    """The rule written out: ρ < ¼ → λ/ω, ρ > ¾ → λ·ω, then max with the floor."""
    if rho < 0.25:
        damping = damping / omega
    elif rho > 0.75:
        damping = damping * omega
    return max(damping, min_damping)


@pytest.mark.parametrize("rho", [-3.0, 0.1, 0.2499, 0.25, 0.5, 0.75, 0.7501, 2.0,
                                 float("nan")])
def test_levenberg_marquardt_rule(rho):
    with tf.Graph().as_default(), tf.Session() as sess:
        new = sess.run(damping_adaptation.levenberg_marquardt_damping(
            tf.constant(0.1), tf.constant(rho), 0.5, 1e-3))
    want = 0.1 if np.isnan(rho) else _lm_rule(0.1, rho, 0.5, 1e-3)
    assert new == pytest.approx(want, rel=1e-6)


def test_levenberg_marquardt_rule_respects_min_damping():
    with tf.Graph().as_default(), tf.Session() as sess:
        new = sess.run(damping_adaptation.levenberg_marquardt_damping(
            tf.constant(0.1), tf.constant(0.9), 0.5, 0.08))
    assert new == pytest.approx(0.08)


def _adaptive_optimizer(model, damping=0.1, is_chief=True, **kwargs):
    prev_batch_loss = tf.placeholder(tf.float32, [])
    opt = kfac.KfacOptimizer(0.1, 0.0, damping, model.layer_collection, momentum=0.0,
                             batch_size=6)
    # loss_fn(prev_train_batch) is the fed value, so ρ can be scripted exactly.
    opt.set_damping_adaptation_params(is_chief, prev_batch_loss, lambda loss: loss,
                                      **kwargs)
    return opt, prev_batch_loss


def test_damping_follows_scripted_rho(tf_behavior):
    interval, decay, min_damping, damping = 2, 0.5, 0.003, 0.1
    omega = decay**interval  # 0.25
    # One ratio per adaptation step: increase, decrease, keep, then decreases that
    # hit min_damping.
    rhos = [0.1, 0.9, 0.5, 0.9, 0.9, 0.9]
    with tf.Graph().as_default():
        model = SoftmaxRegression(*softmax_regression_data())
        gs = tf.train.get_or_create_global_step()
        opt, prev_batch_loss = _adaptive_optimizer(
            model, damping, min_damping=min_damping, damping_adaptation_decay=decay,
            damping_adaptation_interval=interval)
        _, cov_update_op, _, inv_update_op, _, _ = opt.make_ops_and_vars()
        train_op = opt.minimize(model.loss, global_step=gs)
        want = damping
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            assert sess.run(opt.damping) == pytest.approx(damping)
            scripted = iter(rhos)
            for step in range(2 * len(rhos)):
                assert sess.run(gs) == step
                prev_loss, q_change, rho_before = sess.run(
                    [opt._prev_loss, opt._q_model_change, opt._rho])
                adapts = (step + 1) % interval == 0
                rho = next(scripted) if adapts else 0.0
                sess.run(cov_update_op)
                sess.run(inv_update_op)
                loss = sess.run(model.loss)
                sess.run(train_op, {prev_batch_loss: prev_loss + rho * q_change})
                if adapts:
                    assert q_change < 0  # a predicted decrease from the last step
                    assert sess.run(opt._rho) == pytest.approx(rho, abs=1e-3)
                    want = _lm_rule(want, rho, omega, min_damping)
                else:
                    assert sess.run(opt._rho) == rho_before
                assert sess.run(opt.damping) == pytest.approx(want, rel=1e-5), step
                assert sess.run(opt._prev_loss) == pytest.approx(loss, rel=1e-6)
    assert want == min_damping  # the floor was reached


def test_variables_and_damping_property(tf_behavior):
    with tf.Graph().as_default():
        model = SoftmaxRegression(*softmax_regression_data())
        opt, _ = _adaptive_optimizer(model, damping=0.2, min_damping=0.01,
                                     damping_adaptation_decay=0.9,
                                     damping_adaptation_interval=3)
        names = {var.op.name for var in tf.global_variables()}
        assert {"KFAC/rho", "KFAC/prev_loss", "KFAC/q_model_change",
                "KFAC/damping"} <= names
        assert opt.damping is opt._damping
        assert opt.damping.dtype.base_dtype == tf.float32
        # The optimizer hands its damping variable to the estimator when the
        # ops are made.
        opt.make_vars_and_create_op_thunks()
        assert opt._fisher_est._damping is opt.damping
        assert opt.damping_adaptation_interval == 3
        assert opt._omega == pytest.approx(0.9**3)
        assert opt._min_damping == 0.01
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = sess.run([opt._rho, opt._prev_loss, opt._q_model_change,
                               opt.damping])
        np.testing.assert_allclose(values, [0., 0., 0., 0.2], rtol=1e-7)


def test_adapted_damping_reaches_the_preconditioner(tf_behavior):
    data = softmax_regression_data()
    damping, new_damping = 0.1, 0.7
    rng = np.random.RandomState(0)
    vector = rng.randn(4, 3)
    with tf.Graph().as_default():
        model = SoftmaxRegression(*data)
        opt = kfac.KfacOptimizer(0.1, 0.0, damping, model.layer_collection,
                                 batch_size=6, estimation_mode="exact")
        opt.set_damping_adaptation_params(True, None, lambda batch: model.loss)
        _, cov_update_op, _, inv_update_op, _, _ = opt.make_ops_and_vars()
        weights_vec, bias_vec = split_mat2d(vector.astype(np.float32))
        precon = opt._fisher_est.multiply_inverse(
            [(tf.constant(weights_vec), model.weights), (tf.constant(bias_vec),
                                                         model.bias)])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(cov_update_op)
            sess.run(inv_update_op)
            before = mat2d(*sess.run([p for p, _ in precon]))
            sess.run(tf.assign(opt.damping, new_damping))
            unchanged = mat2d(*sess.run([p for p, _ in precon]))
            sess.run(inv_update_op)
            after = mat2d(*sess.run([p for p, _ in precon]))

    x, labels, weights, bias = data
    _, _, probs = softmax_regression_gradient(x.astype(np.float64), labels,
                                              weights.astype(np.float64), bias)
    a_factor = input_factor(x.astype(np.float64))
    g_factor = categorical_output_factor(probs)
    want_before = kronecker_precondition(a_factor, g_factor, damping, vector)
    want_after = kronecker_precondition(a_factor, g_factor, new_damping, vector)
    assert not np.allclose(want_before, want_after, rtol=1e-2)
    np.testing.assert_allclose(before, want_before, rtol=1e-4, atol=1e-5)
    # The new damping is used from the next inverse update on.
    np.testing.assert_allclose(unchanged, want_before, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(after, want_after, rtol=1e-4, atol=1e-5)


def test_minimize_requires_global_step():
    with tf.Graph().as_default():
        model = SoftmaxRegression(*softmax_regression_data())
        opt, _ = _adaptive_optimizer(model)
        with pytest.raises(KeyError, match="global_step"):
            opt.minimize(model.loss)
        with pytest.raises(KeyError, match="global_step"):
            opt.minimize(model.loss, global_step=None)


def test_non_chief_does_not_adapt(tf_behavior):
    with tf.Graph().as_default():
        model = SoftmaxRegression(*softmax_regression_data())
        opt, prev_batch_loss = _adaptive_optimizer(model, is_chief=False,
                                                   damping_adaptation_interval=1)
        opt.make_ops_and_vars()
        train_op = opt.minimize(model.loss)  # no global_step needed
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(train_op, {prev_batch_loss: 5.0})
            values = sess.run([opt._q_model_change, opt._prev_loss, opt.damping])
    np.testing.assert_allclose(values, [0., 0., 0.1], rtol=1e-7)


def test_set_damping_adaptation_params_errors():
    with tf.Graph().as_default():
        model = SoftmaxRegression(*softmax_regression_data())
        opt, _ = _adaptive_optimizer(model)
        with pytest.raises(ValueError, match="already set"):
            opt.set_damping_adaptation_params(True, None, lambda batch: batch)

        no_batch = kfac.KfacOptimizer(0.1, 0.0, 0.1, model.layer_collection, name="K2")
        with pytest.raises(ValueError, match="batch_size is required"):
            no_batch.set_damping_adaptation_params(True, None, lambda batch: batch)

        for kwargs, fragment in [
                (dict(loss_fn=3.0), "loss_fn must be callable"),
                (dict(min_damping=-1.0), "min_damping must be non-negative"),
                (dict(damping_adaptation_decay=1.5), "damping_adaptation_decay"),
                (dict(damping_adaptation_decay=0.0), "damping_adaptation_decay"),
                (dict(damping_adaptation_interval=0), "damping_adaptation_interval"),
                (dict(damping_adaptation_interval=2.5), "damping_adaptation_interval")]:
            fresh = kfac.KfacOptimizer(0.1, 0.0, 0.1, model.layer_collection,
                                       batch_size=6, name="K3")
            arguments = dict(is_chief=True, prev_train_batch=None,
                             loss_fn=lambda batch: batch)
            arguments.update(kwargs)
            with pytest.raises(ValueError, match=fragment):
                fresh.set_damping_adaptation_params(**arguments)
            assert fresh.damping == 0.1 and not fresh._adapt_damping


def test_set_damping_adaptation_params_after_ops_were_made():
    with tf.Graph().as_default():
        model = SoftmaxRegression(*softmax_regression_data())
        opt = kfac.KfacOptimizer(0.1, 0.0, 0.1, model.layer_collection, batch_size=6)
        opt.make_vars_and_create_op_thunks()
        with pytest.raises(ValueError, match="before the optimizer's ops are made"):
            opt.set_damping_adaptation_params(True, None, lambda batch: batch)
