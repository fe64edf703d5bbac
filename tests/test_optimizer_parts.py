"""Tests of the parts KfacOptimizer is composed of (kfac.ops._optimizer), through
the optimizer's private helpers (API.md §8 anchors) and directly, against numpy."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from optimizer_reference import SoftmaxRegression
from optimizer_reference import mat2d
from optimizer_reference import softmax_regression_data

import kfac
from kfac.ops import optimizer
from kfac.ops._optimizer import norm_constraint as clipping
from kfac.ops._optimizer.damping_adaptation import DampingAdaptation
from kfac.ops._optimizer.momentum import Velocities
from kfac.ops._optimizer.non_finite_guard import NonFiniteGuard


def _empty_optimizer(**kwargs):
    return kfac.KfacOptimizer(0.1, 0.2, 0.3, kfac.LayerCollection(), **kwargs)


# --------------------------------------------------------------------------
# Helpers with API.md anchors.

_GRADS = [[[1., 2.], [3., 4.]], [[2., 3.], [4., 5.]]]
_PGRADS = [[[3., 4.], [5., 6.]], [[7., 8.], [9., 10.]]]


def _pairs(values, variables=(None, None)):
    return [(tf.constant(v), var) for v, var in zip(values, variables)]


def test_squared_fisher_norm_anchor():
    with tf.Graph().as_default(), tf.Session() as sess:
        opt = _empty_optimizer()
        sq_norm = opt._squared_fisher_norm(_pairs(_GRADS), _pairs(_PGRADS))
        want = sum(np.sum(np.array(g) * np.array(p)) for g, p in zip(_GRADS, _PGRADS))
        assert want == 174.0
        np.testing.assert_allclose(sess.run(sq_norm), want, rtol=1e-6)


def test_squared_fisher_norm_rejects_mismatched_variables():
    with tf.Graph().as_default():
        x = tf.get_variable("x", [2, 2])
        y = tf.get_variable("y", [2, 2])
        opt = _empty_optimizer()
        with pytest.raises(ValueError, match="must match"):
            opt._squared_fisher_norm(_pairs(_GRADS, (x, y)), _pairs(_PGRADS, (y, x)))


@pytest.mark.parametrize("constraint", [10.0, 0.5])
def test_update_clip_coeff_anchor(constraint):
    lr = 0.1
    with tf.Graph().as_default(), tf.Session() as sess:
        opt = kfac.KfacOptimizer(lr, 0.2, 0.3, kfac.LayerCollection(),
                                 norm_constraint=constraint)
        coeff = sess.run(opt._update_clip_coeff(_pairs(_GRADS), _pairs(_PGRADS)))
    if constraint == 10.0:  # η²·174 = 1.74 < 10: no rescaling.
        assert coeff == pytest.approx(1.0)
    else:  # rescaled onto the boundary η²κ²·174 = C.
        assert lr**2 * coeff**2 * 174.0 == pytest.approx(0.5, rel=1e-5)
        assert coeff == pytest.approx(np.sqrt(0.5 / 1.74), rel=1e-5)


def test_clip_updates_scales_every_vector():
    with tf.Graph().as_default(), tf.Session() as sess:
        opt = kfac.KfacOptimizer(0.1, 0.2, 0.3, kfac.LayerCollection(),
                                 norm_constraint=0.5)
        clipped = opt._clip_updates(_pairs(_GRADS), _pairs(_PGRADS))
        values = sess.run([vec for vec, _ in clipped])
    kappa = np.sqrt(0.5 / 1.74)
    for value, pgrad in zip(values, _PGRADS):
        np.testing.assert_allclose(value, kappa * np.array(pgrad), rtol=1e-5)


def test_update_velocities_twice(tf_behavior):
    with tf.Graph().as_default(), tf.Session() as sess:
        opt = kfac.KfacOptimizer(0.1, 0.2, 0.3, kfac.LayerCollection(), momentum=0.5)
        x = tf.get_variable("x", initializer=tf.ones((2, 2)))
        y = tf.get_variable("y", initializer=tf.ones((2, 2)) * 2)
        vec1, vec2 = tf.ones((2, 2)) * 3, tf.ones((2, 2)) * 4
        update = opt._update_velocities([(vec1, x), (vec2, y)], 0.5)
        slots = [opt.get_slot(x, "velocity"), opt.get_slot(y, "velocity")]
        sess.run(tf.global_variables_initializer())
        np.testing.assert_array_equal(sess.run(slots), np.zeros((2, 2, 2)))
        first = sess.run([v for v, _ in update])
        np.testing.assert_array_equal(first, [np.full((2, 2), 3.), np.full((2, 2), 4.)])
        second = sess.run([v for v, _ in update])
        # v ← 0.5·v + vec.
        np.testing.assert_array_equal(second,
                                      [np.full((2, 2), 4.5), np.full((2, 2), 6.)])
        np.testing.assert_array_equal(sess.run(slots), second)
        assert [var for _, var in update] == [x, y]


def test_update_velocities_with_coefficient():
    with tf.Graph().as_default(), tf.Session() as sess:
        opt = _empty_optimizer()
        x = tf.get_variable("x", initializer=tf.ones((3,)))
        update = opt._update_velocities([(tf.constant([1., 2., 3.]), x)], 2.0,
                                        vec_coeff=-0.5)
        sess.run(tf.global_variables_initializer())
        sess.run(update[0][0])
        np.testing.assert_allclose(sess.run(update[0][0]), [-1.5, -3., -4.5])


def test_compute_prev_updates_is_minus_lr_velocity():
    with tf.Graph().as_default(), tf.Session() as sess:
        opt = kfac.KfacOptimizer(0.25, 0.2, 0.3, kfac.LayerCollection())
        x = tf.get_variable("x", initializer=tf.ones((2,)))
        update = opt._update_velocities([(tf.constant([4., -8.]), x)], 0.0)
        prev = opt._compute_prev_updates([x])
        sess.run(tf.global_variables_initializer())
        sess.run(update[0][0])
        np.testing.assert_allclose(sess.run(prev[0]), [-1., 2.])


def test_private_math_helpers():
    with tf.Graph().as_default(), tf.Session() as sess:
        inner = optimizer._inner_product_list(
            [tf.constant([1., 2.]), tf.constant([[3.]])],
            [tf.constant([4., 5.]), tf.constant([[6.]])])
        m = np.array([[2., 1.], [1., 3.]])
        c = np.array([[1.], [2.]])
        solve = optimizer._two_by_two_solve(tf.constant(m), tf.constant(c))
        inner_value, solve_value = sess.run([inner, solve])
    assert inner_value == pytest.approx(32.0)
    np.testing.assert_allclose(solve_value, np.linalg.solve(m, c))


def test_inner_product_list_of_a_list_with_itself_and_with_another():
    rng = np.random.RandomState(3)
    first = [rng.randn(4, 3), rng.randn(5)]
    second = [rng.randn(4, 3), rng.randn(5)]
    with tf.Graph().as_default(), tf.Session() as sess:
        tensors = [tf.constant(value) for value in first]
        others = [tf.constant(value) for value in second]
        squared, mixed, partly = sess.run([
            optimizer._inner_product_list(tensors, tensors),
            optimizer._inner_product_list(tensors, others),
            optimizer._inner_product_list(tensors, [tensors[0], others[1]])])
    assert squared == pytest.approx(sum(np.sum(a * a) for a in first), rel=1e-12)
    assert mixed == pytest.approx(sum(np.sum(a * b) for a, b in zip(first, second)),
                                  rel=1e-12)
    assert partly == pytest.approx(np.sum(first[0] ** 2) + first[1] @ second[1],
                                   rel=1e-12)


def test_tensor_hyperparameters_are_accepted_and_used():
    with tf.Graph().as_default(), tf.Session() as sess:
        lr = tf.train.exponential_decay(0.2, tf.train.get_or_create_global_step(), 1,
                                        0.5)  # 0.2 at step 0
        opt = kfac.KfacOptimizer(lr, tf.constant(0.95), tf.constant(0.1),
                                 kfac.LayerCollection(), momentum=tf.constant(0.0),
                                 norm_constraint=0.5)
        assert opt._learning_rate is lr
        coeff = opt._update_clip_coeff(_pairs(_GRADS), _pairs(_PGRADS))
        sess.run(tf.global_variables_initializer())
        assert sess.run(coeff) == pytest.approx(np.sqrt(0.5 / (0.04 * 174.0)), rel=1e-5)


# --------------------------------------------------------------------------
# The parts on their own.


def _slot_maker():
    """`variable -> zeros slot`, as the optimizer's `_zeros_slot` (one per var)."""
    slots = {}

    def slot_for(var):
        if var not in slots:
            slots[var] = tf.get_variable(
                var.op.name + "_velocity", initializer=tf.zeros_like(var.initial_value),
                trainable=False)
        return slots[var]

    return slot_for


def test_velocities_follow_the_heavy_ball_rule_in_numpy(tf_behavior):
    rng = np.random.RandomState(0)
    vectors = [rng.randn(2, 3).astype(np.float32) for _ in range(3)]
    decays, coeffs = [0.9, 0.5, 0.0], [1.0, -0.25, 2.0]
    with tf.Graph().as_default(), tf.Session() as sess:
        x = tf.get_variable("x", initializer=tf.ones((2, 3)))
        guard = NonFiniteGuard("skip", tf.get_variable_scope())
        velocities = Velocities(_slot_maker(), guard)
        updates = [velocities.update([(tf.constant(vec), x)], decay, vec_coeff=coeff)
                   for vec, decay, coeff in zip(vectors, decays, coeffs)]
        previous = velocities.previous_updates(
            [x], lambda dtype: tf.constant(0.5, dtype))
        sess.run(tf.global_variables_initializer())
        want = np.zeros((2, 3))
        for update, vec, decay, coeff in zip(updates, vectors, decays, coeffs):
            want = decay * want + coeff * vec
            np.testing.assert_allclose(sess.run(update[0][0]), want, rtol=1e-6)
            np.testing.assert_allclose(sess.run(previous[0]), -0.5 * want, rtol=1e-6)


@pytest.mark.parametrize("policy", ["skip", None])
def test_non_finite_guard_writes_only_finite_steps(policy, tf_behavior):
    """`θ ← θ − η·step` and the deferred velocity write run for a finite
    gradient; a NaN one leaves both and counts the skip ("skip" policy)."""
    with tf.Graph().as_default(), tf.Session() as sess:
        x = tf.get_variable("x", initializer=tf.constant([1.0, 2.0]))
        grad = tf.placeholder(tf.float32, [2])
        guard = NonFiniteGuard(policy, tf.get_variable_scope())
        slot_for = _slot_maker()
        velocities = Velocities(slot_for, guard)
        base = tf.train.GradientDescentOptimizer(0.5)

        def compute_steps(grads_and_vars):
            return velocities.update(grads_and_vars, 0.9)

        if policy is None:
            train_op = base.apply_gradients(compute_steps([(grad, x)]))
        else:
            train_op = guard.apply_if_finite(
                [(grad, x)], compute_steps,
                lambda steps, name: base.apply_gradients(steps, name=name),
                lambda: 0.5, None, "step")
        velocity = slot_for(x)
        sess.run(tf.global_variables_initializer())
        sess.run(train_op, {grad: [2.0, -4.0]})
        np.testing.assert_allclose(sess.run(x), [0.0, 4.0])
        np.testing.assert_allclose(sess.run(velocity), [2.0, -4.0])
        if policy is None:
            return
        sess.run(train_op, {grad: [np.nan, 1.0]})
        np.testing.assert_allclose(sess.run(x), [0.0, 4.0])
        np.testing.assert_allclose(sess.run(velocity), [2.0, -4.0])
        assert sess.run(guard.skipped_steps) == 1
        sess.run(train_op, {grad: [1.0, 1.0]})
        # v = 0.9·[2, −4] + [1, 1]; θ −= 0.5·v.
        np.testing.assert_allclose(sess.run(velocity), [2.8, -2.6], rtol=1e-6)
        np.testing.assert_allclose(sess.run(x), [-1.4, 5.3], rtol=1e-6)


def test_norm_constraint_part_matches_numpy():
    rng = np.random.RandomState(1)
    grads = [rng.randn(3, 2), rng.randn(2)]
    precon = [rng.randn(3, 2), rng.randn(2)]
    learning_rate, constraint = 0.3, 0.01
    with tf.Graph().as_default(), tf.Session() as sess:
        part = clipping.NormConstraint(
            constraint, lambda dtype: tf.constant(learning_rate, dtype))
        pairs = [(tf.constant(g), None) for g in grads]
        precon_pairs = [(tf.constant(p), None) for p in precon]
        coeff, clipped = sess.run([part.coefficient(pairs, precon_pairs),
                                   [vec for vec, _ in part.clip(pairs, precon_pairs)]])
    sq_norm = sum(np.sum(g * p) for g, p in zip(grads, precon))
    assert sq_norm > 0
    want = min(1.0, np.sqrt(constraint / (learning_rate**2 * sq_norm)))
    assert want < 1  # the constraint binds
    assert coeff == pytest.approx(want, rel=1e-6)
    for got, p in zip(clipped, precon):
        np.testing.assert_allclose(got, want * p, rtol=1e-6)


def test_damping_adaptation_part_state_and_rule(tf_behavior):
    with tf.Graph().as_default(), tf.Session() as sess:
        loss_on_prev_batch = tf.placeholder(tf.float32, [])
        part = DampingAdaptation(0.2)
        assert part.damping == 0.2 and not part.enabled and not part.adapting
        assert part.rule.interval == 5
        assert part.rule.omega == pytest.approx(0.95**5)
        with tf.variable_scope("opt"):
            part.enable(True, loss_on_prev_batch, lambda batch: batch, 0.01, 0.5, 2)
        assert part.adapting and part.damping is part.variable
        assert part.variable.op.name == "opt/damping"
        assert part.rule.omega == pytest.approx(0.25)
        guard = NonFiniteGuard("skip", tf.get_variable_scope())
        global_step = tf.placeholder(tf.int64, [])
        new_loss = tf.placeholder(tf.float32, [])
        record_loss = part.record_loss(new_loss, guard.policy)
        record_change = part.record_model_change(tf.constant(-0.5), guard)
        update = part.update_op(global_step)
        sess.run(tf.global_variables_initializer())
        sess.run([record_loss, record_change], {new_loss: 3.0})
        sess.run(record_loss, {new_loss: np.nan})  # a NaN loss is not recorded
        assert sess.run(part.prev_loss) == 3.0
        assert sess.run(part.q_model_change) == -0.5
        # Not an adaptation step ((0 + 1) mod 2 ≠ 0): nothing changes.
        sess.run(update, {global_step: 0, loss_on_prev_batch: 2.0})
        assert sess.run(part.damping) == pytest.approx(0.2)
        # ρ = (2.9 − 3) / −0.5 = 0.2 < ¼: λ ← λ/ω = 0.8.
        sess.run(update, {global_step: 1, loss_on_prev_batch: 2.9})
        assert sess.run(part.rho) == pytest.approx(0.2, rel=1e-5)
        assert sess.run(part.damping) == pytest.approx(0.8, rel=1e-6)


def test_adaptation_that_never_adapts_gives_the_constant_damping_steps(tf_behavior):
    """Enabling adaptation changes no step until λ is adapted: the damping
    variable reaches the inverses as the constant did."""
    data = softmax_regression_data()

    def params_after_steps(adapt):
        with tf.Graph().as_default():
            model = SoftmaxRegression(*data)
            gs = tf.train.get_or_create_global_step()
            opt = kfac.KfacOptimizer(0.5, 0.0, 0.1, model.layer_collection,
                                     momentum=0.5, batch_size=6,
                                     estimation_mode="exact")
            if adapt:
                opt.set_damping_adaptation_params(
                    True, None, lambda batch: model.loss,
                    damping_adaptation_interval=1000)
            _, cov_update_op, _, inv_update_op, _, _ = opt.make_ops_and_vars()
            if adapt:
                assert opt.estimator.damping is opt.damping
            train_op = opt.minimize(model.loss, global_step=gs)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                for _ in range(3):
                    sess.run(cov_update_op)
                    sess.run(inv_update_op)
                    sess.run(train_op)
                return mat2d(*sess.run(model.params))

    constant, adaptive = params_after_steps(False), params_after_steps(True)
    assert not np.allclose(constant, mat2d(*data[2:]), atol=1e-2)
    np.testing.assert_allclose(adaptive, constant, rtol=1e-6, atol=1e-7)
