"""Tests of the parts KfacOptimizer is composed of (kfac.ops._optimizer), through
the optimizer's private helpers (API.md §8 anchors) and directly, against numpy."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import kfac
from kfac.ops import optimizer


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
