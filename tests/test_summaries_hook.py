"""Tests of `kfac.KfacHook` (schedule, report) and of the summaries under
`MonitoredTrainingSession` and `Estimator`."""

import logging

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from summaries_helpers import BATCH
from summaries_helpers import CLASSES
from summaries_helpers import DAMPING
from summaries_helpers import IN
from summaries_helpers import LR
from summaries_helpers import TwoLayerModel
from summaries_helpers import periodic_optimizer
from summaries_helpers import read_scalars

import kfac


def _counting(op, name):
    """`op` grouped with `counter += 1`; returns `(grouped op, counter)`."""
    counter = tf.get_variable(name, initializer=tf.constant(0, tf.int64),
                              trainable=False)
    with tf.control_dependencies([op]):
        increment = counter.assign_add(1, read_value=False)
    return tf.group(op, increment), counter


def _steps_of(counter_values):
    """The steps after which a counter's value increased."""
    return [step for step in range(1, len(counter_values))
            if counter_values[step] > counter_values[step - 1]]


class _Recorder(tf.train.SessionRunHook):
    """Reads `tensors` after every run (in a run of its own)."""

    def __init__(self, tensors):
        self._tensors = tensors
        self.values = []

    def after_run(self, run_context, run_values):
        self.values.append(run_context.session.run(self._tensors))


def test_hook_runs_the_updates_on_schedule(tf_behavior):
    with tf.Graph().as_default():
        model = TwoLayerModel()
        global_step = tf.train.get_or_create_global_step()
        _, cov_op, _, inv_op, _, _ = model.optimizer.make_ops_and_vars()
        cov_op, cov_count = _counting(cov_op, "cov_count")
        inv_op, inv_count = _counting(inv_op, "inv_count")
        hook = kfac.KfacHook(model.optimizer, invert_every=3, cov_update_every=2,
                             report_every=0, cov_update_op=cov_op,
                             inv_update_op=inv_op)
        train_op = model.optimizer.minimize(model.loss, global_step=global_step)
        recorder = _Recorder([cov_count, inv_count])
        with tf.train.MonitoredSession(hooks=[hook, recorder]) as sess:
            for _ in range(7):
                sess.run(train_op, model.feed())
    covs, invs = zip(*recorder.values)
    # Steps 0, 2, 4, 6 update the covariances, 0, 3, 6 the inverses.
    assert list(covs) == [1, 1, 2, 2, 3, 3, 4]
    assert list(invs) == [1, 1, 1, 2, 2, 2, 3]
    assert hook.step == 7


def test_hook_makes_the_ops_and_refreshes_the_inverses_after_the_covariances():
    """Built before minimize, the hook makes the ops itself; after step 0 the
    inverse is that of the covariance updated in step 0's run."""
    with tf.Graph().as_default():
        model = TwoLayerModel()
        hook = kfac.KfacHook(model.optimizer, invert_every=10, report_every=0)
        train_op = model.optimizer.minimize(model.loss)
        block = list(model.layer_collection.get_blocks())[1]
        factor = block._output_factor
        inverse = factor.get_inverse(block._output_damping_func)
        recorder = _Recorder([factor.get_cov(), inverse,
                              block._output_damping_func()])
        with tf.train.MonitoredSession(hooks=[hook, recorder]) as sess:
            sess.run(train_op, model.feed())
    cov, inv, damping = recorder.values[0]
    assert not np.allclose(cov, np.eye(CLASSES))  # the covariance was updated
    np.testing.assert_allclose(inv, np.linalg.inv(cov + damping * np.eye(CLASSES)),
                               rtol=1e-8)


def test_hook_schedule_continues_from_the_global_step():
    with tf.Graph().as_default():
        model = TwoLayerModel()
        global_step = tf.get_variable(
            "global_step", initializer=tf.constant(4, tf.int64), trainable=False,
            collections=[tf.GraphKeys.GLOBAL_VARIABLES, tf.GraphKeys.GLOBAL_STEP])
        _, cov_op, _, inv_op, _, _ = model.optimizer.make_ops_and_vars()
        inv_op, inv_count = _counting(inv_op, "inv_count")
        hook = kfac.KfacHook(model.optimizer, invert_every=3, report_every=0,
                             cov_update_op=cov_op, inv_update_op=inv_op)
        train_op = model.optimizer.minimize(model.loss, global_step=global_step)
        recorder = _Recorder(inv_count)
        with tf.train.MonitoredSession(hooks=[hook, recorder]) as sess:
            for _ in range(4):
                sess.run(train_op, model.feed())
    # Steps 4, 5, 6, 7: only step 6 refreshes the inverses.
    assert recorder.values == [0, 0, 1, 1]


def test_hook_reports_health(caplog):
    with tf.Graph().as_default():
        model = TwoLayerModel()
        hook = kfac.KfacHook(model.optimizer, invert_every=2, report_every=3)
        train_op = model.optimizer.minimize(model.loss)
        # Runs after the KfacHook's report, on the same state.
        recorder = _Recorder(kfac.summaries.curvature_health(model.optimizer))
        with caplog.at_level(logging.INFO, logger="kfac.health"):
            with tf.train.MonitoredSession(hooks=[hook, recorder]) as sess:
                for _ in range(4):
                    sess.run(train_op, model.feed())
        values = recorder.values[3]
    lines = [record.getMessage() for record in caplog.records
             if record.name == "kfac.health"]
    assert [line.split(" | ")[0] for line in lines] == ["kfac step 0", "kfac step 3"]
    report = hook.last_report
    for name in ("kfac/damping", "kfac/fc1/weights/input_factor/condition_number"):
        assert report[name] == pytest.approx(values[name], rel=1e-6)
    conditions = kfac.summaries.format_report(3, report).split(" | ")
    worst = max((value, name) for name, value in report.items()
                if name.endswith("condition_number"))
    assert "worst conditioned {} {:.3g}".format(
        worst[1][len("kfac/"):-len("/condition_number")], worst[0]) in conditions
    assert "damping {:.4g}".format(DAMPING) in conditions
    assert lines[-1] == kfac.summaries.format_report(3, report)


def test_hook_with_the_periodic_optimizer_only_reports():
    with tf.Graph().as_default():
        model = TwoLayerModel()
        optimizer = periodic_optimizer(model)
        train_op = optimizer.minimize(model.loss)
        hook = kfac.KfacHook(optimizer, report_every=1)
        with tf.train.MonitoredSession(hooks=[hook]) as sess:
            for _ in range(2):
                sess.run(train_op, model.feed())
            counter = sess.run(optimizer.counter)
    assert counter == 2  # the training op ran twice, nothing else did
    assert hook.last_report["kfac/skipped_steps"] == 0.0


def test_hook_argument_errors():
    with tf.Graph().as_default():
        model = TwoLayerModel()
        with pytest.raises(ValueError, match="invert_every must be an integer >= 1"):
            kfac.KfacHook(model.optimizer, invert_every=0)
        with pytest.raises(ValueError, match="report_every must be an integer >= 0"):
            kfac.KfacHook(model.optimizer, report_every=-1)
        model.optimizer.make_ops_and_vars()
        with pytest.raises(ValueError,
                           match="pass its cov_update_op and inv_update_op"):
            kfac.KfacHook(model.optimizer)


def test_summaries_in_monitored_training_session(tf_behavior, tmp_path):
    with tf.Graph().as_default():
        model = TwoLayerModel()
        global_step = tf.train.get_or_create_global_step()
        hook = kfac.KfacHook(model.optimizer, invert_every=2, report_every=0)
        train_op = model.optimizer.minimize(model.loss, global_step=global_step)
        model.optimizer.make_summary_ops()
        with tf.train.MonitoredTrainingSession(
                checkpoint_dir=str(tmp_path), hooks=[hook], save_summaries_steps=2,
                save_checkpoint_secs=None, log_step_count_steps=None) as sess:
            for _ in range(3):
                sess.run(train_op, model.feed())
    values = read_scalars(str(tmp_path))
    assert values["kfac/damping"] == pytest.approx(DAMPING)
    assert values["kfac/fc2/weights/output_factor/condition_number"] >= 1.0
    assert values["kfac/fc1/weights/gradient_norm"] > 0.0


def test_summaries_under_estimator(tmp_path):
    if not hasattr(tf, "estimator"):
        pytest.skip("tf.estimator was removed in TensorFlow 2.16 (this is %s)"
                    % tf.__version__)
    rng = np.random.RandomState(0)
    features = rng.randn(5 * BATCH, IN)
    labels = rng.randint(0, CLASSES, size=5 * BATCH).astype(np.int32)

    def input_fn():
        data = tf.data.Dataset.from_tensor_slices((features, labels))
        return data.batch(BATCH, drop_remainder=True).repeat()

    def model_fn(features, labels, mode):
        model = TwoLayerModel(inputs=(features, labels))
        hook = kfac.KfacHook(model.optimizer, invert_every=2, report_every=0)
        train_op = model.optimizer.minimize(
            model.loss, global_step=tf.train.get_or_create_global_step())
        model.optimizer.make_summary_ops()
        return tf.estimator.EstimatorSpec(mode, loss=model.loss, train_op=train_op,
                                          training_hooks=[hook])

    config = tf.estimator.RunConfig(model_dir=str(tmp_path), save_summary_steps=2,
                                    log_step_count_steps=None)
    tf.estimator.Estimator(model_fn, config=config).train(input_fn, steps=4)
    values = read_scalars(str(tmp_path))
    assert values["kfac/learning_rate"] == pytest.approx(LR)
    assert values["kfac/fc1/weights/input_factor/condition_number"] >= 1.0
