"""Decoupled weight decay of the optimizer comparisons
(`OptimizerSpec.weight_decay`): after each optimizer's own update, every
kernel is multiplied by `1 − weight_decay · s` (`s` the learning-rate
schedule's factor); biases are left alone."""

import os
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

# `bench` is a top-level folder of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from example_helpers import assert_first_sgd_step  # noqa: E402
from example_helpers import one_step  # noqa: E402

from bench import convnet as bench  # noqa: E402
from kfac.examples import comparison_training  # noqa: E402
from kfac.examples.comparison_training import OptimizerSpec  # noqa: E402


def _batch(size=8):
    train, _, _, _ = bench.load_data(None, True, 16, 0)
    return train[:size]


def _one_step(spec, batch, **kwargs):
    """`example_helpers.one_step` of `spec` in a new convnet comparison graph."""
    return one_step(_graph(spec), spec, batch, **kwargs)


def _graph(spec):
    return bench.build_training_graph(spec, bench.ConvnetSettings(), 785)


def _assert_sgd_step(spec, rate, keep, **kwargs):
    assert_first_sgd_step(_graph(spec), spec, _batch(), rate, keep, **kwargs)


def test_sgd_decays_the_kernels_after_its_step(tf_behavior):
    # A large decay, so that decaying before the step (0.5·w − 0.1·g) would
    # be told apart from after it (0.5·(w − 0.1·g)).
    _assert_sgd_step(OptimizerSpec("sgd", 0.1, weight_decay=0.5), rate=0.1, keep=0.5)


def test_the_decay_follows_the_budget_schedule():
    # At 0.7 of the budget the schedule's factor is 0.5² = 0.25.
    spec = OptimizerSpec("sgd", 0.4, weight_decay=0.5, decay_clock="budget",
                         decay_start=0.5, decay_half_life=0.1)
    _assert_sgd_step(spec, rate=0.1, keep=1 - 0.5 * 0.25, budget_spent=0.7)


def test_the_decay_follows_the_step_schedule_at_the_step_taken(tf_behavior):
    # The step taken is step 3 (the training op then counts 4): factor 0.5³.
    spec = OptimizerSpec("sgd", 0.8, weight_decay=0.4, decay_half_life=1)
    _assert_sgd_step(spec, rate=0.1, keep=1 - 0.4 * 0.125, step=3)


@pytest.mark.parametrize("kind", ["sgd", "adam", "kfac", "kfac_qmodel"])
def test_every_optimizer_takes_its_own_step_then_decays(kind):
    """Against the same optimizer without decay (same weights, batch and
    graph seed): the loss is the same, the kernels are its kernels times
    `1 − weight_decay`, the biases its biases."""
    batch = _batch()
    spec = OptimizerSpec(kind, 0.1 if kind != "kfac_qmodel" else 1.0, damping=0.1)
    loss, names, before, _, plain = _one_step(spec, batch)
    decayed_loss, _, decayed_before, _, decayed = _one_step(
        OptimizerSpec(kind, spec.learning_rate, damping=0.1, weight_decay=0.2), batch)
    assert decayed_loss == pytest.approx(loss, rel=1e-6)
    for name, old, new, old_decayed, new_decayed in zip(
            names, before, plain, decayed_before, decayed):
        np.testing.assert_array_equal(old_decayed, old)
        assert not np.allclose(new, old), name
        keep = 0.8 if new.ndim >= 2 else 1.0
        np.testing.assert_allclose(new_decayed, keep * new, rtol=1e-5,
                                   atol=1e-6 * np.max(np.abs(new)), err_msg=name)


def test_no_weight_decay_leaves_the_training_op_as_it_is(graph):
    train_op = tf.no_op(name="train")
    assert comparison_training.with_weight_decay(
        OptimizerSpec("sgd", 0.1), train_op) is train_op


@pytest.mark.parametrize("weight_decay", [-1e-4, 1.0, 2.0])
def test_a_weight_decay_outside_zero_to_one_is_rejected(weight_decay):
    with pytest.raises(ValueError, match=r"weight_decay must be in \[0, 1\), got "
                       + str(weight_decay)):
        OptimizerSpec("kfac", 0.1, weight_decay=weight_decay)
