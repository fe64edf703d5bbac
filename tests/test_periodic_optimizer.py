"""Tests of kfac.PeriodicInvCovUpdateKfacOpt against a numpy re-implementation.

The model is one fully-connected layer with a bias and a softmax cross-entropy
(float64, "exact" estimation, so the statistics are deterministic): its input
factor is `A = mean x̃x̃ᵀ` (side IN+1) and its output factor the exact Fisher of
the logits `G = mean (diag p − ppᵀ)` (side OUT). The numpy reference replays the
schedule of the class docstring step by step: moving averages with decay
`cov_ema_decay ** cov_update_every` at due steps only (from the identity),
damped inverses at due steps only, regular momentum with the inverses in force.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from optimizer_reference import append_ones
from optimizer_reference import categorical_output_factor
from optimizer_reference import damped_factors
from optimizer_reference import input_factor
from optimizer_reference import mat2d
from optimizer_reference import softmax
from optimizer_reference import softmax_regression_gradient
from optimizer_reference import split_mat2d

import kfac
from kfac.ops import periodic_inv_cov_update_kfac_opt as periodic

BATCH, IN, OUT = 6, 3, 3
# LR is exact in float32: GradientDescentOptimizer makes a float32 tensor of it.
LR, DAMPING, DECAY, MOMENTUM = 0.25, 0.1, 0.8, 0.5
NUM_STEPS = 7


def _batches(num_steps=NUM_STEPS, seed=0):
    """Inputs with labels from a fixed linear teacher (learnable)."""
    rng = np.random.RandomState(seed)
    teacher = np.random.RandomState(42).randn(IN, OUT)
    inputs = [rng.randn(BATCH, IN) for _ in range(num_steps)]
    return [(x, np.argmax(x @ teacher, axis=1)) for x in inputs]


def _initial_params(seed=1):
    rng = np.random.RandomState(seed)
    return 0.5 * rng.randn(IN, OUT), 0.1 * rng.randn(OUT)


class Model(object):
    """The registered layer, its loss on fed batches and the optimizer's op."""

    def __init__(self, use_apply_gradients=False, adapt_damping=None,
                 learning_rate=LR, **optimizer_kwargs):
        weights, bias = _initial_params()
        self.x = tf.placeholder(tf.float64, [BATCH, IN], name="x")
        self.labels = tf.placeholder(tf.int64, [BATCH], name="labels")
        self.weights = tf.get_variable("w", initializer=tf.constant(weights))
        self.bias = tf.get_variable("b", initializer=tf.constant(bias))
        self.loss = self.loss_fn((self.x, self.labels))
        logits = tf.matmul(self.x, self.weights) + self.bias
        self.layer_collection = kfac.LayerCollection()
        self.layer_collection.register_fully_connected(
            (self.weights, self.bias), self.x, logits)
        self.layer_collection.register_categorical_predictive_distribution(logits)
        self.global_step = tf.train.get_or_create_global_step()
        optimizer_kwargs.setdefault("momentum", MOMENTUM)
        self.opt = kfac.PeriodicInvCovUpdateKfacOpt(
            learning_rate=learning_rate, cov_ema_decay=DECAY, damping=DAMPING,
            layer_collection=self.layer_collection, estimation_mode="exact",
            batch_size=BATCH, **optimizer_kwargs)
        if adapt_damping is not None:
            self.prev_x = tf.placeholder(tf.float64, [BATCH, IN], name="prev_x")
            self.prev_labels = tf.placeholder(tf.int64, [BATCH], name="prev_labels")
            self.opt.set_damping_adaptation_params(
                True, (self.prev_x, self.prev_labels), self.loss_fn,
                damping_adaptation_interval=adapt_damping)
        if use_apply_gradients:
            self.train_op = self.opt.apply_gradients(
                self.opt.compute_gradients(self.loss), global_step=self.global_step)
        else:
            self.train_op = self.opt.minimize(self.loss, global_step=self.global_step)
        factors = list(self.layer_collection.get_factors())
        sides = [factor._cov_shape[0] for factor in factors]
        self.input_factor = factors[sides.index(IN + 1)]
        self.output_factor = factors[sides.index(OUT)]
        self.velocities = [self.opt.get_slot(var, "velocity")
                           for var in (self.weights, self.bias)]

    def loss_fn(self, batch):
        x, labels = batch
        logits = tf.matmul(x, self.weights) + self.bias
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits))

    @staticmethod
    def inverse(factor):
        (variable,) = factor._matpower_by_exp_and_damping.values()
        return variable

    def state_fetches(self):
        return {
            "theta": (self.weights, self.bias),
            "velocity": self.velocities,
            "A": self.input_factor.get_cov_var(),
            "G": self.output_factor.get_cov_var(),
            "A_inv": self.inverse(self.input_factor),
            "G_inv": self.inverse(self.output_factor),
            "counter": self.opt.counter,
            "global_step": self.global_step,
        }

    def feed(self, batch, prev_batch=None):
        feed = {self.x: batch[0], self.labels: batch[1]}
        if prev_batch is not None:
            feed.update({self.prev_x: prev_batch[0], self.prev_labels: prev_batch[1]})
        return feed


def _state(sess, model):
    state = sess.run(model.state_fetches())
    state["theta"] = mat2d(*state["theta"])
    state["velocity"] = mat2d(*state["velocity"])
    return state


def _run_periodic(batches, **kwargs):
    """The state after initialisation and after each run of the training op."""
    with tf.Graph().as_default():
        model = Model(**kwargs)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            states = [_state(sess, model)]
            for batch in batches:
                sess.run(model.train_op, feed_dict=model.feed(batch))
                states.append(_state(sess, model))
    return states


def _numpy_periodic(batches, cov_update_every, invert_every, num_burnin_steps,
                    spread_groups=None):
    """The same runs from scratch; `spread_groups` lists factor names ("A", "G")
    per group when the inverse updates are spread."""
    theta = mat2d(*_initial_params())
    velocity = np.zeros_like(theta)
    covs = {"A": np.eye(IN + 1), "G": np.eye(OUT)}
    inverses = {"A": np.eye(IN + 1), "G": np.eye(OUT)}
    decay = DECAY**cov_update_every
    states = [dict(theta=theta, velocity=velocity, counter=0, global_step=0,
                   **covs, A_inv=inverses["A"], G_inv=inverses["G"])]
    global_step = 0
    for counter, (x, labels) in enumerate(batches):
        step = counter - num_burnin_steps
        weights, bias = split_mat2d(theta)
        if step < 0 or step % cov_update_every == 0:
            probs = softmax(x @ weights + bias)
            covs["A"] = decay * covs["A"] + (1 - decay) * input_factor(x)
            covs["G"] = (decay * covs["G"]
                         + (1 - decay) * categorical_output_factor(probs))
        if step >= 0:
            if spread_groups is not None:
                due = {"A", "G"} if step == 0 else spread_groups[step % invert_every]
            else:
                due = {"A", "G"} if step % invert_every == 0 else set()
            damped = dict(zip("AG", damped_factors(covs["A"], covs["G"], DAMPING)))
            for name in due:
                inverses[name] = np.linalg.inv(damped[name])
            grad = softmax_regression_gradient(x, labels, weights, bias)[0]
            velocity = MOMENTUM * velocity + inverses["A"] @ grad @ inverses["G"]
            theta = theta - LR * velocity
            global_step += 1
        states.append(dict(theta=theta, velocity=velocity, counter=counter + 1,
                           global_step=global_step, **covs, A_inv=inverses["A"],
                           G_inv=inverses["G"]))
    return states


def _assert_states_close(got, want):
    assert len(got) == len(want)
    for step, (got_state, want_state) in enumerate(zip(got, want)):
        for key in want_state:
            np.testing.assert_allclose(
                got_state[key], want_state[key], rtol=1e-9, atol=1e-12,
                err_msg="{} after run {}".format(key, step))


# --------------------------------------------------------------------------
# The schedule, against numpy.


@pytest.mark.parametrize("spread", [False, True])
def test_schedule_matches_numpy(tf_behavior, spread):
    """cov_update_every=2, invert_every=3, 2 burn-in steps: statistics, inverses,
    velocities, weights, counter and global_step after every run."""
    batches = _batches()
    got = _run_periodic(batches, cov_update_every=2, invert_every=3,
                        num_burnin_steps=2, spread_inverse_updates=spread)
    # Inverse cost = side³: A (side 4) is the heavier, then G (side 3).
    groups = [{"A"}, {"G"}, set()] if spread else None
    want = _numpy_periodic(batches, 2, 3, 2, spread_groups=groups)
    _assert_states_close(got, want)
    # Not vacuous: the weights move after the burn-in, the statistics move at
    # their due steps only.
    assert not np.allclose(want[3]["theta"], want[2]["theta"], atol=1e-3)
    for run in range(1, NUM_STEPS + 1):
        cov_due = run <= 2 or (run - 3) % 2 == 0
        assert np.allclose(got[run]["A"], got[run - 1]["A"]) != cov_due, run


def test_apply_gradients_path_matches_numpy():
    batches = _batches(5)
    got = _run_periodic(batches, use_apply_gradients=True, cov_update_every=1,
                        invert_every=2)
    _assert_states_close(got, _numpy_periodic(batches, 1, 2, 0))


def test_spread_inverse_updates_refresh_one_group_per_step(tf_behavior):
    batches = _batches()
    got = _run_periodic(batches, cov_update_every=1, invert_every=3,
                        spread_inverse_updates=True)
    _assert_states_close(got, _numpy_periodic(batches, 1, 3, 0,
                                              [{"A"}, {"G"}, set()]))
    changed = [{name for name in ("A", "G")
                if not np.allclose(got[run][name + "_inv"],
                                   got[run - 1][name + "_inv"])}
               for run in range(1, NUM_STEPS + 1)]
    assert changed == [{"A", "G"}, {"G"}, set(), {"A"}, {"G"}, set(), {"A"}]


def test_spread_inverses_are_fresh_at_the_end_of_each_cycle():
    """With the statistics updated once per cycle (cov_update_every ==
    invert_every), after the last group of a cycle every inverse equals the
    damped inverse of the current statistics."""
    got = _run_periodic(_batches(6), cov_update_every=2, invert_every=2,
                        spread_inverse_updates=True)
    for run in (2, 4, 6):  # k = 1, 3, 5: the last step of each cycle
        state = got[run]
        damped_a, damped_g = damped_factors(state["A"], state["G"], DAMPING)
        np.testing.assert_allclose(state["A_inv"], np.linalg.inv(damped_a),
                                   rtol=1e-9, err_msg="run %d" % run)
        np.testing.assert_allclose(state["G_inv"], np.linalg.inv(damped_g),
                                   rtol=1e-9, err_msg="run %d" % run)
    # In mid-cycle the group refreshed first is stale.
    damped_g = damped_factors(got[3]["A"], got[3]["G"], DAMPING)[1]
    assert not np.allclose(got[3]["G_inv"], np.linalg.inv(damped_g))


def test_burnin_only_updates_statistics(tf_behavior):
    got = _run_periodic(_batches(4), num_burnin_steps=3, invert_every=1)
    initial = got[0]
    for run in (1, 2, 3):
        state = got[run]
        assert state["counter"] == run and state["global_step"] == 0
        for key in ("theta", "velocity", "A_inv", "G_inv"):
            np.testing.assert_array_equal(state[key], initial[key], err_msg=key)
        assert not np.allclose(state["A"], got[run - 1]["A"])
    assert got[4]["counter"] == 4 and got[4]["global_step"] == 1
    assert not np.allclose(got[4]["theta"], initial["theta"])
    assert not np.allclose(got[4]["A_inv"], initial["A_inv"])


# --------------------------------------------------------------------------
# Inverse groups.


def test_partition_by_cost_greedy_largest_first():
    # 27 → g0; 20 → g1; 8 → g2; 8 → g2 (16); 1 → g2 (17).
    assert periodic.partition_by_cost([8, 27, 1, 20, 8], 3) == [[1], [3], [0, 2, 4]]
    assert periodic.partition_by_cost([5, 5], 4) == [[0], [1], [], []]
    assert periodic.partition_by_cost([], 2) == [[], []]


def test_inverse_update_groups_balance_a_deeper_model():
    """Layers 6→5→3→2 with biases: factor sides A 7, 6, 4 and G 5, 3, 2, i.e.
    costs 343, 216, 64, 125, 27, 8 (total 783)."""
    with tf.Graph().as_default():
        rng = np.random.RandomState(0)
        activations = tf.constant(rng.randn(4, 6))
        layer_collection = kfac.LayerCollection()
        for index, (fan_in, fan_out) in enumerate([(6, 5), (5, 3), (3, 2)]):
            weights = tf.get_variable("w%d" % index,
                                      initializer=rng.randn(fan_in, fan_out))
            bias = tf.get_variable("b%d" % index, initializer=np.zeros(fan_out))
            pre = tf.matmul(activations, weights) + bias
            layer_collection.register_fully_connected((weights, bias), activations,
                                                      pre)
            activations = tf.tanh(pre)
        layer_collection.register_categorical_predictive_distribution(pre)
        opt = kfac.PeriodicInvCovUpdateKfacOpt(
            invert_every=2, spread_inverse_updates=True, learning_rate=0.1,
            cov_ema_decay=0.9, damping=0.1, layer_collection=layer_collection)
        assert opt.inverse_update_groups is None
        opt._make_vars_and_thunks_once()  # what minimize does first
        groups = opt.inverse_update_groups
    sides = [[factor._cov_shape[0] for factor in group] for group in groups]
    # Largest first into the lightest group: 343 → g0; 216 → g1; 125 → g1
    # (341); 64 → g1 (405); 27 → g0 (370); 8 → g0 (378).
    assert [set(group) for group in sides] == [{7, 3, 2}, {6, 5, 4}]
    totals = [sum(side**3 for side in group) for group in sides]
    assert max(totals) == 405 and sum(totals) == 783


def test_inverse_update_groups_without_spread_is_one_group():
    with tf.Graph().as_default():
        model = Model(invert_every=4)
        (group,) = model.opt.inverse_update_groups
        assert set(group) == {model.input_factor, model.output_factor}


# --------------------------------------------------------------------------
# Damping adaptation, non-finite batches, graph growth.


@pytest.mark.parametrize("momentum_type", ["regular", "qmodel"])
def test_damping_adaptation_trains_and_waits_for_the_burnin(tf_behavior,
                                                           momentum_type):
    kwargs = dict(momentum_type=momentum_type)
    if momentum_type == "qmodel":
        kwargs.update(momentum=0.0, learning_rate=1.0)
    batches = _batches(12, seed=3)
    with tf.Graph().as_default():
        model = Model(adapt_damping=2, num_burnin_steps=2, invert_every=2,
                      cov_update_every=2, **kwargs)
        opt = model.opt
        damping_state = [opt.damping, opt._rho, opt._prev_loss, opt._q_model_change]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            initial = sess.run(damping_state)
            full_loss = lambda: np.mean([  # noqa: E731
                sess.run(model.loss, model.feed(batch)) for batch in batches])
            loss_before = full_loss()
            prev_batch = batches[0]
            rhos = []
            for run, batch in enumerate(batches):
                sess.run(model.train_op, model.feed(batch, prev_batch))
                prev_batch = batch
                if run < 2:
                    assert sess.run(damping_state) == initial
                    assert sess.run(model.global_step) == 0
                rhos.append(sess.run(opt._rho))
            loss_after = full_loss()
            assert sess.run(opt.counter) == len(batches)
    assert loss_after < 0.9 * loss_before
    # ρ is computed (and stored) at adaptation steps after the burn-in.
    assert any(rho != 0.0 and np.isfinite(rho) for rho in rhos)


def test_a_non_finite_batch_is_skipped_and_counted(tf_behavior):
    batches = _batches(4)
    bad_x = batches[1][0].copy()
    bad_x[0, 0] = np.nan
    batches[1] = (bad_x, batches[1][1])
    with tf.Graph().as_default():
        model = Model(invert_every=1)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            states = [_state(sess, model)]
            for batch in batches:
                sess.run(model.train_op, model.feed(batch))
                states.append(_state(sess, model))
            skipped = sess.run([model.opt.skipped_steps,
                                model.opt.skipped_factor_updates])
    before, after = states[1], states[2]
    for key in ("theta", "velocity", "A", "G", "A_inv", "G_inv"):
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert [state["counter"] for state in states] == [0, 1, 2, 3, 4]
    assert skipped == [1, 2]  # one training step; the A and G estimates
    assert np.all(np.isfinite(states[-1]["theta"]))
    assert not np.allclose(states[3]["theta"], states[2]["theta"])


def test_the_graph_does_not_grow_while_training(tf_behavior):
    with tf.Graph().as_default() as graph:
        model = Model(invert_every=3, cov_update_every=2, num_burnin_steps=1,
                      spread_inverse_updates=True)
        init = tf.global_variables_initializer()
        graph.finalize()
        num_ops = len(graph.get_operations())
        with tf.Session() as sess:
            sess.run(init)
            for batch in _batches(5):
                sess.run(model.train_op, model.feed(batch))
            assert sess.run(model.opt.counter) == 5
        assert len(graph.get_operations()) == num_ops
    # The op to run is the only one registered as a training op.
    assert graph.get_collection(tf.GraphKeys.TRAIN_OP) == [model.train_op]


def test_estimator_gets_the_compounded_decay_and_counter_is_named():
    with tf.Graph().as_default():
        model = Model(cov_update_every=3)
        assert model.opt._fisher_est._cov_ema_decay == pytest.approx(DECAY**3)
        assert model.opt.counter.op.name == "KFAC/counter"
        assert model.opt.counter.dtype.base_dtype == tf.int64
        assert model.opt.counter not in tf.trainable_variables()


# --------------------------------------------------------------------------
# Arguments and package.


@pytest.mark.parametrize("name, value", [
    ("invert_every", 0), ("invert_every", -2), ("invert_every", 2.0),
    ("invert_every", True), ("cov_update_every", 0), ("cov_update_every", "2"),
    ("num_burnin_steps", -1), ("num_burnin_steps", 1.5),
    ("spread_inverse_updates", 1), ("spread_inverse_updates", "yes"),
])
def test_bad_arguments_name_the_argument_and_value(name, value):
    with tf.Graph().as_default():
        with pytest.raises(ValueError) as error:
            kfac.PeriodicInvCovUpdateKfacOpt(
                learning_rate=0.1, cov_ema_decay=0.9, damping=0.1,
                layer_collection=kfac.LayerCollection(), **{name: value})
    assert name in str(error.value) and repr(value) in str(error.value)


def test_cov_ema_decay_error_shows_the_given_value():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match=r"cov_ema_decay.*1\.5"):
            kfac.PeriodicInvCovUpdateKfacOpt(
                cov_update_every=2, learning_rate=0.1, cov_ema_decay=1.5,
                damping=0.1, layer_collection=kfac.LayerCollection())


def test_ops_made_beforehand_are_refused():
    with tf.Graph().as_default():
        weights, bias = _initial_params()
        x = tf.constant(np.ones((BATCH, IN)))
        w = tf.get_variable("w", initializer=tf.constant(weights))
        b = tf.get_variable("b", initializer=tf.constant(bias))
        logits = tf.matmul(x, w) + b
        layer_collection = kfac.LayerCollection()
        layer_collection.register_fully_connected((w, b), x, logits)
        layer_collection.register_categorical_predictive_distribution(logits)
        opt = kfac.PeriodicInvCovUpdateKfacOpt(
            learning_rate=0.1, cov_ema_decay=0.9, damping=0.1,
            layer_collection=layer_collection)
        opt.make_ops_and_vars()
        with pytest.raises(ValueError, match="already made"):
            opt.minimize(tf.reduce_sum(logits))


def test_package_exports():
    assert kfac.PeriodicInvCovUpdateKfacOpt is periodic.PeriodicInvCovUpdateKfacOpt
    assert issubclass(kfac.PeriodicInvCovUpdateKfacOpt, kfac.KfacOptimizer)
    assert "PeriodicInvCovUpdateKfacOpt" in kfac.__all__
    assert "periodic_inv_cov_update_kfac_opt" in kfac.__all__
    assert kfac.periodic_inv_cov_update_kfac_opt is periodic
    for name in kfac.__all__:
        assert hasattr(kfac, name), name


def test_reference_helpers_are_consistent():
    """The reference's A is the mean of x̃x̃ᵀ (guards the numpy side)."""
    x = _batches(1)[0][0]
    xt = append_ones(x)
    np.testing.assert_allclose(input_factor(x),
                               sum(np.outer(row, row) for row in xt) / BATCH)
