"""K-FAC's norm constraint under a learning-rate decay (the convnet benchmark's
`OptimizerSpec.scheduled_norm_constraint`), and the clipping factor `κ` in a
run's health record.

A clipped update is `u = -η·κ·p` with `κ = sqrt(C / (η²⟨g, p⟩))`, so
`⟨g, u⟩ = -η·κ·⟨g, p⟩ = -C / (η·κ)`: `κ = -C / (η⟨g, u⟩)`, computed below from
the gradient and the update actually applied, independently of the
optimizer's own record of `κ`.
"""

import dataclasses
import os
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

# `bench` is a top-level folder of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_convnet_helpers import best_mode_specs  # noqa: E402

from bench import convnet as bench  # noqa: E402
from bench import convnet_specs  # noqa: E402
from kfac.examples import _health_plot  # noqa: E402
from kfac.examples import comparison_training  # noqa: E402
from kfac.examples.comparison_training import OptimizerSpec  # noqa: E402

# Far below any update's squared Fisher norm here: the bound binds.
TINY_CONSTRAINT = 1e-9
RATE = 0.4
# The budget's decay: the rate halves every tenth of the budget after half of it.
DECAY = dict(decay_clock="budget", decay_start=0.5, decay_half_life=0.1)


def kfac_spec(**change):
    settings = dict(damping=0.1, momentum=0.0, norm_constraint=TINY_CONSTRAINT,
                    **DECAY)
    return OptimizerSpec("kfac", RATE, **dict(settings, **change))


def first_step(spec, budget_spent):
    """`(⟨g, u⟩, u, κ)` of the first step of `spec` on 8 generated images: `g`
    the gradient at the initial weights, `u` the update applied (all
    variables), `κ` the health record's clipping factor after the step."""
    train, _, _, _ = bench.load_data(None, True, 16, 0)
    batch = train[:8]
    graph_ops = bench.build_training_graph(spec, bench.ConvnetSettings(), 785)
    with graph_ops.graph.as_default(), tf.Session() as sess:
        variables = tf.trainable_variables()
        gradients = tf.gradients(graph_ops.model.loss, variables)
        health = _health_plot.health_tensors(graph_ops.optimizer)
        sess.run(tf.global_variables_initializer())
        before, grads = sess.run([variables, gradients],
                                 {graph_ops.model.inputs: batch})
        trainer = comparison_training.Trainer(sess, spec, graph_ops)
        trainer.step(0, batch, batch, budget_spent=budget_spent)
        after = sess.run(variables)
        kappa = sess.run(health[_health_plot.CLIP_COEFFICIENT])
    update = np.concatenate([(new - old).ravel() for old, new in zip(before, after)])
    grad = np.concatenate([g.ravel() for g in grads])
    return float(np.dot(grad.astype(np.float64), update)), update, float(kappa)


@pytest.mark.parametrize("scheduled", [False, True])
def test_health_records_the_clipping_factor_of_the_update_applied(scheduled):
    """Before the decay and 0.1 of the budget into it (rate 0.2): the
    recorded κ is `-C_t / (η_t⟨g, u⟩)`, with `C_t = C/4` when the bound
    follows the schedule."""
    for spent, factor in ((0.0, 1.0), (0.6, 0.5)):
        inner, _, kappa = first_step(kfac_spec(scheduled_norm_constraint=scheduled),
                                     spent)
        constraint = TINY_CONSTRAINT * (factor ** 2 if scheduled else 1.0)
        assert 0.0 < kappa < 1e-2
        assert kappa == pytest.approx(-constraint / (RATE * factor * inner), rel=2e-3)


def test_a_clipped_step_ignores_the_decay_unless_the_bound_follows_it():
    """Halving the rate leaves a clipped update unchanged (its size is
    `sqrt(C / pᵀF̂p)`); with the scheduled bound (`C·s²`) it halves too."""
    _, fixed_start, _ = first_step(kfac_spec(), 0.0)
    _, fixed_decayed, _ = first_step(kfac_spec(), 0.6)
    _, scheduled_start, _ = first_step(kfac_spec(scheduled_norm_constraint=True), 0.0)
    _, scheduled_decayed, _ = first_step(kfac_spec(scheduled_norm_constraint=True), 0.6)
    scale = np.max(np.abs(fixed_start))
    assert scale > 0
    np.testing.assert_allclose(fixed_decayed, fixed_start, rtol=0, atol=2e-3 * scale)
    np.testing.assert_allclose(scheduled_start, fixed_start, rtol=0, atol=2e-3 * scale)
    np.testing.assert_allclose(scheduled_decayed, 0.5 * fixed_start, rtol=0,
                               atol=2e-3 * scale)


def test_norm_constraint_of_follows_the_square_of_the_schedule():
    with tf.Graph().as_default(), tf.Session() as sess:
        step = tf.train.get_or_create_global_step()
        scheduled = comparison_training.norm_constraint_of(
            kfac_spec(scheduled_norm_constraint=True), step)
        (spent,) = tf.get_collection(comparison_training.BUDGET_SPENT)
        sess.run(tf.global_variables_initializer())
        got = [sess.run(scheduled, {spent: value}) for value in (0.0, 0.5, 0.6, 0.8)]
        fixed = comparison_training.norm_constraint_of(kfac_spec(), step)
    np.testing.assert_allclose(got, np.array([1.0, 1.0, 0.25, 1.0 / 64]) *
                               TINY_CONSTRAINT, rtol=1e-5)
    assert fixed == TINY_CONSTRAINT


@pytest.mark.parametrize("change", [dict(norm_constraint=None),
                                    dict(decay_half_life=None)])
def test_a_scheduled_bound_needs_a_bound_and_a_decay(change):
    with pytest.raises(ValueError, match="scheduled_norm_constraint needs a "
                       "norm_constraint and a learning-rate decay"):
        kfac_spec(scheduled_norm_constraint=True, **change)


def test_health_has_no_clipping_factor_without_a_bound():
    spec = kfac_spec(norm_constraint=None)
    graph_ops = bench.build_training_graph(spec, bench.ConvnetSettings(), 785)
    with graph_ops.graph.as_default():
        health = _health_plot.health_tensors(graph_ops.optimizer)
    assert _health_plot.CLIP_COEFFICIENT not in health
    assert _health_plot.DAMPING in health


@pytest.mark.parametrize("architecture", ["convnet", "residual"])
def test_scheduled_clip_adds_kfac_with_the_bound_following_the_schedule(architecture):
    specs = best_mode_specs("scheduled_clip", architecture)
    best_wd = convnet_specs.best_weight_decay_specs(architecture)
    assert specs[:3] == best_wd and len(specs) == 4
    kfac, scheduled = best_wd[-1], specs[-1]
    assert scheduled.name == kfac.name + " scheduled nc"
    assert scheduled.scheduled_norm_constraint and not kfac.scheduled_norm_constraint
    assert dataclasses.replace(scheduled, label=kfac.label,
                               scheduled_norm_constraint=False) == kfac
