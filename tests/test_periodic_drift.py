"""`PeriodicInvCovUpdateKfacOpt(invert_every="adaptive")`: inverses refreshed
when their factor drifted (kfac/ops/_optimizer/drift.py)."""

import numpy as np
import pytest
import summaries_helpers as helpers
import tensorflow.compat.v1 as tf

import kfac


def _build(seed=0, **kwargs):
    model = helpers.TwoLayerModel(seed=seed)
    options = dict(invert_every="adaptive", learning_rate=helpers.LR,
                   cov_ema_decay=helpers.DECAY, damping=helpers.DAMPING,
                   layer_collection=model.layer_collection, momentum=0.5)
    options.update(kwargs)
    optimizer = kfac.PeriodicInvCovUpdateKfacOpt(**options)
    train_op = optimizer.minimize(model.loss)
    return model, optimizer, train_op


def _states(optimizer):
    states = sorted(optimizer._drift_states.values(), key=lambda s: s.factor.name)
    return [(state.count, state.last_step) for state in states]


def _feeds(num_steps, seed=1):
    rng = np.random.RandomState(seed)
    return [{"x": rng.randn(helpers.BATCH, helpers.IN),
             "labels": rng.randint(0, helpers.CLASSES, size=helpers.BATCH)}
            for _ in range(num_steps)]


def _feed(model, values):
    return {model.x: values["x"], model.labels: values["labels"]}


def test_unchanging_factors_are_inverted_only_at_the_bound(graph):
    # cov_ema_decay=1: the moving averages never move.
    model, optimizer, train_op = _build(cov_ema_decay=1.0, max_every=7,
                                        max_drift=0.01)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for values in _feeds(20):
            sess.run(train_op, feed_dict=_feed(model, values))
        states = sess.run(_states(optimizer))
    assert len(states) == 4
    assert states == [(3, 14)] * 4  # steps 0, 7 and 14


def test_a_factor_that_jumps_is_inverted_at_the_next_step(graph):
    model, optimizer, train_op = _build(cov_ema_decay=1.0, max_every=100,
                                        max_drift=0.05)
    jumping = optimizer._drift_states[min(optimizer._drift_states)]
    cov = jumping.factor.get_cov_var()
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        feeds = _feeds(8)
        for values in feeds[:4]:
            sess.run(train_op, feed_dict=_feed(model, values))
        sess.run(cov.assign(cov * 1.2))  # a relative change of 0.2 > 0.05
        sess.run(train_op, feed_dict=_feed(model, feeds[4]))
        counts_after_jump = sess.run(_states(optimizer))
        for values in feeds[5:]:
            sess.run(train_op, feed_dict=_feed(model, values))
        final = sess.run(_states(optimizer))
        snapshot, jumped_cov = sess.run([jumping.snapshot, cov])
    jumped = _states(optimizer).index((jumping.count, jumping.last_step))
    for index, (count, last) in enumerate(counts_after_jump):
        assert (count, last) == ((2, 4) if index == jumped else (1, 0))
    assert final == counts_after_jump
    # The refresh was computed from the jumped covariance.
    assert np.array_equal(snapshot, jumped_cov)


def test_drift_triggers_refreshes_and_the_schedule_resumes_from_a_checkpoint(
        tmp_path):
    path = str(tmp_path / "model.ckpt")
    feeds = _feeds(12)

    def run(steps, restore=False, save=False):
        with tf.Graph().as_default():
            model, optimizer, train_op = _build(max_drift=0.05, min_every=2,
                                                max_every=9)
            fetches = _states(optimizer)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                if restore:
                    tf.train.Saver().restore(sess, path)
                for values in steps:
                    sess.run(train_op, feed_dict=_feed(model, values))
                if save:
                    tf.train.Saver().save(sess, path)
                return sess.run(fetches)

    uninterrupted = run(feeds)
    run(feeds[:5], save=True)
    resumed = run(feeds[5:], restore=True)
    assert resumed == uninterrupted
    counts = [count for count, _ in uninterrupted]
    # Refreshed by drift more often than the bound alone (steps 0 and 9) ...
    assert max(counts) > 2
    # ... and never more often than min_every allows.
    assert max(counts) <= 6


def test_inverse_counts_appear_in_the_health_summaries(graph):
    model, optimizer, train_op = _build(max_every=5)
    scalars = kfac.summaries.curvature_health(optimizer)
    names = [name for name in scalars if name.endswith("/inverse_updates")]
    assert len(names) == 4
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for values in _feeds(3):
            sess.run(train_op, feed_dict=_feed(model, values))
        values = sess.run({name: scalars[name] for name in names})
        counts = sess.run([count for count, _ in _states(optimizer)])
    assert sorted(values.values()) == sorted(float(count) for count in counts)
    assert all(value >= 1 for value in values.values())


@pytest.mark.parametrize("kwargs, message", [
    (dict(invert_every="sometimes"), "invert_every"),
    (dict(invert_every=10, max_drift=0.1), "max_drift"),
    (dict(max_drift=-0.1), "max_drift"),
    (dict(min_every=0), "min_every"),
    (dict(min_every=5, max_every=3), "must not exceed"),
])
def test_bad_schedules_are_refused_with_the_argument_named(graph, kwargs, message):
    model = helpers.TwoLayerModel()
    options = dict(invert_every="adaptive", learning_rate=0.1, cov_ema_decay=0.9,
                   damping=0.1, layer_collection=model.layer_collection)
    options.update(kwargs)
    with pytest.raises(ValueError, match=message):
        kfac.PeriodicInvCovUpdateKfacOpt(**options)
