"""Tests of `kfac.summaries`: the curvature-health scalars written as TensorBoard
summaries, read back from the event file and compared with numpy computations
on the same variables."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from optimizer_reference import append_ones
from optimizer_reference import kronecker_precondition
from optimizer_reference import pi_adjusted_damping
from summaries_helpers import BATCH
from summaries_helpers import DAMPING
from summaries_helpers import IN
from summaries_helpers import LR
from summaries_helpers import TwoLayerModel
from summaries_helpers import periodic_optimizer
from summaries_helpers import read_scalars

import kfac


def _initialize_and_train(sess, model, train_op, cov_op, inv_op, num_steps):
    """Initializes, then `num_steps` classic-loop steps on fresh batches."""
    sess.run(tf.global_variables_initializer())
    for feed in [model.feed() for _ in range(num_steps)]:
        sess.run([train_op, cov_op], feed)
        sess.run(inv_op)


def _numpy_factor_health(cov, damping):
    eigenvalues = np.linalg.eigvalsh(cov)
    return {"trace": np.trace(cov), "frobenius_norm": np.linalg.norm(cov),
            "min_eigenvalue": eigenvalues[0], "max_eigenvalue": eigenvalues[-1],
            "damping": damping,
            "condition_number":
                (eigenvalues[-1] + damping) / (eigenvalues[0] + damping)}


def _assert_close(values, expected):
    for tag, want in expected.items():
        assert tag in values, tag
        assert values[tag] == pytest.approx(want, rel=1e-5, abs=1e-7), tag


@pytest.mark.parametrize("norm_constraint", [None, 1e-4])
def test_summaries_match_numpy(tf_behavior, tmp_path, norm_constraint):
    with tf.Graph().as_default():
        model = TwoLayerModel(norm_constraint=norm_constraint)
        _, cov_op, _, inv_op, _, _ = model.optimizer.make_ops_and_vars()
        train_op = model.optimizer.minimize(model.loss)
        summary_op = model.optimizer.make_summary_ops(histograms=True)
        covs = model.factors()
        with tf.Session() as sess:
            _initialize_and_train(sess, model, train_op, cov_op, inv_op, 3)
            feed = model.feed()
            grads, factor_values = sess.run([model.gradients, covs], feed)
            sess.run(train_op, feed)  # reads the inverses of factor_values
            writer = tf.summary.FileWriter(str(tmp_path))
            writer.add_summary(sess.run(summary_op), global_step=4)
            writer.close()
    values = read_scalars(str(tmp_path))

    expected = {"kfac/learning_rate": LR, "kfac/damping": DAMPING,
                "kfac/skipped_steps": 0.0, "kfac/skipped_factor_updates": 0.0}
    layer_grads = [np.vstack([grads[0], grads[1][None, :]]), grads[2]]
    sq_fisher_norm = 0.0
    for name, (a_cov, g_cov), grad in zip(["fc1/weights", "fc2/weights"],
                                          factor_values, layer_grads):
        precon = kronecker_precondition(a_cov, g_cov, DAMPING, grad)
        sq_fisher_norm += np.sum(grad * precon)
        d_a, d_g = pi_adjusted_damping(a_cov, g_cov, DAMPING)
        prefix = "kfac/%s/" % name
        expected[prefix + "gradient_norm"] = np.linalg.norm(grad)
        expected[prefix + "preconditioned_gradient_norm"] = np.linalg.norm(precon)
        expected[prefix + "gradient_cosine"] = np.sum(grad * precon) / (
            np.linalg.norm(grad) * np.linalg.norm(precon))
        expected[prefix + "pi"] = np.sqrt(d_a / d_g)
        for role, cov, damping in [("input_factor", a_cov, d_a),
                                   ("output_factor", g_cov, d_g)]:
            for key, want in _numpy_factor_health(cov, damping).items():
                expected[prefix + role + "/" + key] = want
    if norm_constraint is not None:
        kappa = min(1.0, np.sqrt(norm_constraint / (LR**2 * sq_fisher_norm)))
        assert kappa < 1.0  # the constraint is active in this test
        expected["kfac/norm_constraint_coefficient"] = kappa
    else:
        assert "kfac/norm_constraint_coefficient" not in values
    _assert_close(values, expected)


def test_histograms_of_factor_diagonals(tmp_path):
    with tf.Graph().as_default():
        model = TwoLayerModel()
        model.optimizer.make_ops_and_vars()
        model.optimizer.minimize(model.loss)
        summary_op = kfac.summaries.make_summary_ops(model.optimizer, histograms=True,
                                                     collections=[])
        assert not tf.get_collection(tf.GraphKeys.SUMMARIES)
        # The tags do not depend on the graph's names: a second set is the same.
        again = model.optimizer.make_summary_ops(histograms=True)
        assert len(tf.get_collection(tf.GraphKeys.SUMMARIES)) == 5
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            summary, summary_again = (
                tf.Summary.FromString(value) for value in sess.run([summary_op, again]))
        assert [value.tag for value in summary.value] == [
            value.tag for value in summary_again.value]
    histograms = {value.tag: value.histo for value in summary.value
                  if value.HasField("histo")}
    assert set(histograms) == {"kfac/fc%d/weights/%s/diagonal" % (layer, role)
                               for layer in (1, 2)
                               for role in ("input_factor", "output_factor")}
    # The factors start as identities: every diagonal entry is 1.
    histogram = histograms["kfac/fc1/weights/input_factor/diagonal"]
    assert histogram.num == IN + 1
    assert histogram.min == histogram.max == 1.0


def test_qmodel_coefficients_match_the_velocity_update(tf_behavior):
    """`v_new = μ·v_old − α·p`: (α, μ) solved from the slots and the numpy `p`."""
    with tf.Graph().as_default():
        # A fixed graph seed: the sampled targets set the factors, hence μ.
        tf.set_random_seed(1)
        model = TwoLayerModel(momentum=0.0, momentum_type="qmodel", learning_rate=1.0)
        _, cov_op, _, inv_op, _, _ = model.optimizer.make_ops_and_vars()
        train_op = model.optimizer.minimize(model.loss)
        scalars = kfac.summaries.curvature_health(model.optimizer)
        velocities = [model.optimizer.get_slot(var, "velocity")
                      for var in model.variables]
        covs = model.factors()
        with tf.Session() as sess:
            _initialize_and_train(sess, model, train_op, cov_op, inv_op, 2)
            feed = model.feed()
            old, grads, factor_values = sess.run([velocities, model.gradients, covs],
                                                 feed)
            sess.run(train_op, feed)
            new, values = sess.run([velocities, scalars])
    layer_grads = [np.vstack([grads[0], grads[1][None, :]]), grads[2]]
    precon = np.concatenate([
        kronecker_precondition(a_cov, g_cov, DAMPING, grad).ravel()
        for (a_cov, g_cov), grad in zip(factor_values, layer_grads)])

    def flat(slots):
        return np.concatenate([np.vstack([slots[0], slots[1][None, :]]).ravel(),
                               slots[2].ravel()])

    (mu, minus_alpha), *_ = np.linalg.lstsq(
        np.stack([flat(old), precon], axis=1), flat(new), rcond=None)
    assert values["kfac/qmodel_alpha"] == pytest.approx(-minus_alpha, rel=1e-5)
    assert values["kfac/qmodel_mu"] == pytest.approx(mu, rel=1e-5)
    assert abs(mu) > 1e-3  # a real two-direction step, not the μ = 0 case


def test_damping_adaptation_scalars(tf_behavior):
    """ρ and the predicted/actual changes of the last adaptation, from the
    variables before that step and the loss on the previous batch."""
    with tf.Graph().as_default():
        model = TwoLayerModel(momentum=0.0)
        prev_x = tf.placeholder(tf.float64, [BATCH, IN])
        prev_labels = tf.placeholder(tf.int32, [BATCH])

        def loss_fn(batch):
            x, labels = batch
            pre1 = tf.matmul(x, model.w1) + model.b1
            logits = tf.matmul(tf.tanh(pre1), model.w2)
            return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=logits))

        optimizer = model.optimizer
        optimizer.set_damping_adaptation_params(
            True, (prev_x, prev_labels), loss_fn, damping_adaptation_interval=2)
        global_step = tf.train.get_or_create_global_step()
        _, cov_op, _, inv_op, _, _ = optimizer.make_ops_and_vars()
        train_op = optimizer.minimize(model.loss, global_step=global_step)
        scalars = kfac.summaries.curvature_health(optimizer, per_layer=False)
        adaptation = optimizer.damping_adaptation
        prev_batch_loss = loss_fn((prev_x, prev_labels))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            previous = model.feed()
            feed = model.feed()
            # global_step 0: no adaptation; step 1 adapts ((1 + 1) % 2 == 0).
            sess.run([train_op, cov_op], {**feed, prev_x: previous[model.x],
                                          prev_labels: previous[model.labels]})
            sess.run(inv_op)
            previous, feed = feed, model.feed()
            prev_feed = {prev_x: previous[model.x], prev_labels: previous[model.labels]}
            predicted, prev_loss, loss_now = sess.run(
                [adaptation.q_model_change, adaptation.prev_loss, prev_batch_loss],
                prev_feed)
            sess.run(train_op, {**feed, **prev_feed})
            values = sess.run(scalars)
    actual = loss_now - prev_loss
    assert values["kfac/predicted_loss_change"] == pytest.approx(predicted, rel=1e-6)
    assert values["kfac/actual_loss_change"] == pytest.approx(actual, rel=1e-4)
    assert values["kfac/rho"] == pytest.approx(actual / predicted, rel=1e-4)
    assert predicted < 0  # a step predicted to decrease the loss
    for name in ("qmodel_alpha", "qmodel_mu", "q_model_change", "damping"):
        assert "kfac/" + name in values


def test_skipped_steps_are_reported():
    with tf.Graph().as_default():
        model = TwoLayerModel()
        model.optimizer.make_ops_and_vars()
        train_op = model.optimizer.minimize(model.loss)
        scalars = kfac.summaries.curvature_health(model.optimizer)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            feed = model.feed()
            feed[model.x][0, 0] = np.nan
            sess.run(train_op, feed)
            values = sess.run(scalars)
    assert values["kfac/skipped_steps"] == 1.0
    # The skipped step's statistics are recorded: its gradient was not finite.
    assert np.isnan(values["kfac/fc1/weights/gradient_norm"])


def test_summaries_need_the_optimizer_ops():
    with tf.Graph().as_default():
        model = TwoLayerModel()
        with pytest.raises(ValueError, match="factor variables do not exist yet"):
            model.optimizer.make_summary_ops()


def test_periodic_optimizer_summaries(tmp_path):
    with tf.Graph().as_default():
        model = TwoLayerModel()
        optimizer = periodic_optimizer(model)
        train_op = optimizer.minimize(model.loss)
        summary_op = optimizer.make_summary_ops()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(3):
                sess.run(train_op, model.feed())
            covs = sess.run(model.factors())
            summary = tf.Summary.FromString(sess.run(summary_op))
    values = {value.tag: value.simple_value for value in summary.value}
    a_cov = covs[1][0]
    assert values["kfac/fc2/weights/input_factor/trace"] == pytest.approx(
        np.trace(a_cov), rel=1e-6)
    assert np.isfinite(values["kfac/fc2/weights/gradient_cosine"])
    assert 0 < values["kfac/fc2/weights/gradient_cosine"] <= 1.0


def test_input_factor_of_a_layer_with_bias_is_the_homogeneous_second_moment():
    """A sanity anchor for the numbers above: after one covariance update with
    decay 0 the input factor's trace is that of `mean x̃ x̃ᵀ`."""
    with tf.Graph().as_default():
        model = TwoLayerModel(cov_ema_decay=0.0)
        _, cov_op, _, _, _, _ = model.optimizer.make_ops_and_vars()
        scalars = kfac.summaries.curvature_health(model.optimizer)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            feed = model.feed()
            sess.run(cov_op, feed)
            values = sess.run(scalars)
    xt = append_ones(feed[model.x])
    assert values["kfac/fc1/weights/input_factor/trace"] == pytest.approx(
        np.trace(xt.T @ xt / BATCH), rel=1e-6)
