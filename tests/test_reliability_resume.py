"""Exact resume from checkpoints.

Every piece of K-FAC state (factor moving averages, inverses, velocities,
damping and its adaptation state, counters, global step) lives in variables,
so training N steps straight and training N/2 steps, saving, restoring in a
fresh graph and session and training N/2 more give bit-identical variables.
Deterministic estimation ("exact"), one thread, the inverses refreshed every
other step (so the restored inverse variables are used as they are).
"""

import functools

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import kfac

NUM_STEPS = 6  # resumed after NUM_STEPS // 2
INVERSE_EVERY = 2
BATCH, NUM_CLASSES = 4, 3
CONFIGS = ("fc", "conv", "multi_tower", "qmodel", "adaptive_damping")


def _session_config():
    return tf.ConfigProto(intra_op_parallelism_threads=1,
                          inter_op_parallelism_threads=1)


def _batches(config):
    """Per-step inputs and labels, the same in every run."""
    rng = np.random.RandomState(7)
    shape = [NUM_STEPS, BATCH, 4, 4, 2] if config == "conv" else [NUM_STEPS, BATCH, 3]
    inputs = rng.randn(*shape).astype(np.float32)
    labels = rng.randint(0, NUM_CLASSES, size=[NUM_STEPS, BATCH]).astype(np.int64)
    return inputs, labels


def _variable(name, shape, rng):
    return tf.get_variable(name, initializer=tf.constant(
        0.5 * rng.randn(*shape).astype(np.float32)))


class Model(object):
    """One of the CONFIGS, with its optimizer and update ops, in the current graph."""

    def __init__(self, config):
        self.config = config
        inputs, _ = _batches(config)
        self.x = tf.placeholder(tf.float32, inputs.shape[1:], name="x")
        self.labels = tf.placeholder(tf.int64, [BATCH], name="labels")
        self.global_step = tf.train.get_or_create_global_step()
        self.layer_collection = kfac.LayerCollection()
        rng = np.random.RandomState(0)
        if config == "conv":
            self._build_conv(rng)
        elif config == "multi_tower":
            self._build_multi_tower(rng)
        else:
            self._build_mlp(rng)
        kwargs = dict(momentum=0.9, estimation_mode="exact", batch_size=BATCH)
        learning_rate = 0.1
        if config == "qmodel":
            kwargs.update(momentum_type="qmodel", momentum=0.0)
            learning_rate = 1.0
        self.opt = kfac.KfacOptimizer(learning_rate, 0.9, 0.05, self.layer_collection,
                                      **kwargs)
        self.feeds = [self.x, self.labels]
        if config == "adaptive_damping":
            self.prev_x = tf.placeholder(tf.float32, self.x.shape, name="prev_x")
            self.prev_labels = tf.placeholder(tf.int64, [BATCH], name="prev_labels")
            self.feeds += [self.prev_x, self.prev_labels]
            self.opt.set_damping_adaptation_params(
                True, (self.prev_x, self.prev_labels),
                lambda batch: self._mlp_loss(*batch)[0], min_damping=1e-3,
                damping_adaptation_decay=0.5, damping_adaptation_interval=2)
        (_, self.cov_update_op, _, self.inv_update_op, _,
         _) = self.opt.make_ops_and_vars()
        self.train_op = self.opt.minimize(self.loss, global_step=self.global_step)
        self.saver = tf.train.Saver()

    def _mlp_loss(self, x, labels):
        pre = tf.matmul(x, self.w1) + self.b1
        self.hidden = tf.tanh(pre)
        logits = tf.matmul(self.hidden, self.w2) + self.b2
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits))
        return loss, pre, logits

    def _build_mlp(self, rng):
        self.w1, self.b1 = _variable("w1", [3, 5], rng), _variable("b1", [5], rng)
        self.w2, self.b2 = _variable("w2", [5, 3], rng), _variable("b2", [3], rng)
        self.loss, pre, logits = self._mlp_loss(self.x, self.labels)
        lc = self.layer_collection
        lc.register_fully_connected((self.w1, self.b1), self.x, pre)
        lc.register_fully_connected((self.w2, self.b2), self.hidden, logits)
        lc.register_categorical_predictive_distribution(logits)

    def _build_conv(self, rng):
        kernel = _variable("kernel", [3, 3, 2, 3], rng)
        bias = _variable("bias", [3], rng)
        w = _variable("w", [48, NUM_CLASSES], rng)
        b = _variable("b", [NUM_CLASSES], rng)
        pre = tf.nn.conv2d(self.x, kernel, [1, 1, 1, 1], "SAME") + bias
        hidden = tf.reshape(tf.nn.relu(pre), [BATCH, 48])
        logits = tf.matmul(hidden, w) + b
        self.loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self.labels, logits=logits))
        lc = self.layer_collection
        lc.register_conv2d((kernel, bias), [1, 1, 1, 1], "SAME", self.x, pre)
        lc.register_fully_connected((w, b), hidden, logits)
        lc.register_categorical_predictive_distribution(logits)

    def _build_multi_tower(self, rng):
        """Two towers (half batches) sharing the weights, one collection."""
        losses = []
        half = BATCH // 2
        for tower in range(2):
            with tf.device("/cpu:0"), tf.variable_scope("model", reuse=tower > 0):
                w = tf.get_variable("w", initializer=tf.constant(
                    0.5 * np.random.RandomState(1).randn(3, NUM_CLASSES), tf.float32))
                b = tf.get_variable("b", [NUM_CLASSES],
                                    initializer=tf.zeros_initializer())
                x = self.x[tower * half:(tower + 1) * half]
                labels = self.labels[tower * half:(tower + 1) * half]
                logits = tf.matmul(x, w) + b
                losses.append(tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels=labels, logits=logits)))
                self.layer_collection.register_fully_connected((w, b), x, logits)
                self.layer_collection.register_categorical_predictive_distribution(
                    logits, name="logits")
        self.loss = tf.add_n(losses) / 2.0

    def feed(self, step):
        inputs, labels = _batches(self.config)
        values = [inputs[step], labels[step]]
        if self.config == "adaptive_damping":
            values += [inputs[max(step - 1, 0)], labels[max(step - 1, 0)]]
        return dict(zip(self.feeds, values))

    def train(self, sess, steps):
        for step in steps:
            feed = self.feed(step)
            sess.run(self.cov_update_op, feed)
            if step % INVERSE_EVERY == 0:
                sess.run(self.inv_update_op)
            sess.run(self.train_op, feed)


def _all_variables(sess):
    """{name: value} of every global variable (all K-FAC state included)."""
    variables = tf.global_variables()
    return dict(zip([var.op.name for var in variables], sess.run(variables)))


@functools.lru_cache(maxsize=None)
def _cached_straight_run(config):
    return _straight_run(config)


def _straight_run(config):
    with tf.Graph().as_default():
        model = Model(config)
        with tf.Session(config=_session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            model.train(sess, range(NUM_STEPS))
            return _all_variables(sess)


def _resumed_run(config, checkpoint):
    with tf.Graph().as_default():
        model = Model(config)
        with tf.Session(config=_session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            model.train(sess, range(NUM_STEPS // 2))
            model.saver.save(sess, checkpoint)
    with tf.Graph().as_default():
        model = Model(config)
        with tf.Session(config=_session_config()) as sess:
            # No initializer: a variable missing from the checkpoint fails here.
            model.saver.restore(sess, checkpoint)
            model.train(sess, range(NUM_STEPS // 2, NUM_STEPS))
            return _all_variables(sess)


def _assert_identical(straight, resumed):
    assert sorted(straight) == sorted(resumed)
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)


@pytest.mark.parametrize("config", CONFIGS)
def test_resume_gives_identical_variables(tmp_path, config):
    straight = _cached_straight_run(config)
    resumed = _resumed_run(config, str(tmp_path / "model.ckpt"))
    _assert_identical(straight, resumed)
    # The state that must have been restored is really there.
    names = set(straight)
    assert any(name.endswith("/cov") for name in names)
    assert any("matpower_exp-1" in name for name in names)
    assert any(name.endswith("/num_skipped_updates") for name in names)
    assert "KFAC/num_skipped_steps" in names
    assert any(name.endswith("/KFAC") for name in names)  # velocity slots
    if config == "adaptive_damping":
        assert {"KFAC/damping", "KFAC/rho", "KFAC/prev_loss",
                "KFAC/q_model_change"} <= names
        assert straight["KFAC/damping"] != pytest.approx(0.05)  # it was adapted
    assert straight["global_step"] == NUM_STEPS


def test_resume_with_ref_variables(tmp_path, v1_behavior):
    """The same with ref variables and control flow v1 (`disable_v2_behavior`);
    the tests above use resource variables. (conftest restores v2 behaviour.)"""
    _assert_identical(_straight_run("fc"),
                      _resumed_run("fc", str(tmp_path / "model.ckpt")))


def test_restored_state_is_needed(tmp_path):
    """Without the K-FAC state (weights only), the resumed run differs: the test
    above would catch any state that lived outside the checkpoint."""
    checkpoint = str(tmp_path / "model.ckpt")
    straight = _cached_straight_run("fc")
    with tf.Graph().as_default():
        model = Model("fc")
        with tf.Session(config=_session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            model.train(sess, range(NUM_STEPS // 2))
            model.saver.save(sess, checkpoint)
    with tf.Graph().as_default():
        model = Model("fc")
        weights = tf.trainable_variables() + [model.global_step]
        with tf.Session(config=_session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(weights).restore(sess, checkpoint)
            model.train(sess, range(NUM_STEPS // 2, NUM_STEPS))
            resumed = _all_variables(sess)
    assert not np.array_equal(resumed["w1"], straight["w1"])


# --------------------------------------------------------------------------
# tf.estimator checkpoints (TF 2.15 only: later versions have no tf.estimator).


def _estimator_model_fn(features, labels, mode):
    del features, labels  # The batch is chosen by the global step (see below).
    inputs, batch_labels = _batches("fc")
    global_step = tf.train.get_or_create_global_step()
    # Restarting train() restarts an input pipeline; selecting the batch by the
    # restored global step keeps the data sequence identical across restarts.
    index = tf.math.floormod(global_step, NUM_STEPS)
    x = tf.gather(tf.constant(inputs), index)
    y = tf.gather(tf.constant(batch_labels), index)
    rng = np.random.RandomState(0)
    w1, b1 = _variable("w1", [3, 5], rng), _variable("b1", [5], rng)
    w2, b2 = _variable("w2", [5, 3], rng), _variable("b2", [3], rng)
    pre = tf.matmul(x, w1) + b1
    hidden = tf.tanh(pre)
    logits = tf.matmul(hidden, w2) + b2
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=y, logits=logits))
    lc = kfac.LayerCollection()
    lc.register_fully_connected((w1, b1), x, pre)
    lc.register_fully_connected((w2, b2), hidden, logits)
    lc.register_categorical_predictive_distribution(logits)
    opt = kfac.KfacOptimizer(0.1, 0.9, 0.05, lc, momentum=0.9, estimation_mode="exact")
    cov_update_thunks, inv_update_thunks = opt.make_vars_and_create_op_thunks()
    cov_update_op = tf.group(*[thunk() for thunk in cov_update_thunks])

    def update_inverses():
        with tf.control_dependencies([thunk() for thunk in inv_update_thunks]):
            return tf.constant(True)

    with tf.control_dependencies([cov_update_op]):
        inv_update = tf.cond(
            tf.equal(tf.math.floormod(global_step, INVERSE_EVERY), 0),
            update_inverses, lambda: tf.constant(False))
        with tf.control_dependencies([inv_update]):
            train_op = opt.minimize(loss, global_step=global_step)
    return tf.estimator.EstimatorSpec(mode=mode, loss=loss, train_op=train_op)


def _estimator(model_dir):
    config = tf.estimator.RunConfig(
        model_dir=model_dir, session_config=_session_config(),
        save_summary_steps=None, log_step_count_steps=None,
        save_checkpoints_steps=1000)
    return tf.estimator.Estimator(model_fn=_estimator_model_fn, config=config)


def _input_fn():
    return tf.data.Dataset.from_tensors(({"unused": [0.0]}, [0])).repeat()


def _estimator_variables(estimator):
    return {name: estimator.get_variable_value(name)
            for name in estimator.get_variable_names()}


@pytest.mark.slow
def test_estimator_checkpoints_resume_exactly(tmp_path):
    estimator_module = getattr(tf, "estimator", None)
    if estimator_module is None or not hasattr(estimator_module, "Estimator"):
        pytest.skip("tf.estimator is not available in this TensorFlow version")
    straight = _estimator(str(tmp_path / "straight"))
    straight.train(_input_fn, max_steps=NUM_STEPS)
    _estimator(str(tmp_path / "resumed")).train(_input_fn, max_steps=NUM_STEPS // 2)
    # A new Estimator object: a fresh graph and session restored from model_dir.
    resumed = _estimator(str(tmp_path / "resumed"))
    resumed.train(_input_fn, max_steps=NUM_STEPS)
    straight_values = _estimator_variables(straight)
    _assert_identical(straight_values, _estimator_variables(resumed))
    assert straight_values["global_step"] == NUM_STEPS
    assert any("matpower_exp-1" in name for name in straight_values)
