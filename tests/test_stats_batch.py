"""K-FAC's curvature statistics from part of each batch
(`OptimizerSpec.stats_batch_fraction`): the factors see exactly the first
rows of the batch, the loss and its gradient the whole batch."""

import dataclasses
import os
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import convnet as bench  # noqa: E402
from bench import convnet_specs  # noqa: E402
from kfac.examples import comparison_training  # noqa: E402
from kfac.examples.comparison_training import OptimizerSpec  # noqa: E402

BATCH = 8


def _build(spec, registered, architecture="convnet"):
    """`spec`'s graph (separate covariance and inverse ops) on
    `architecture`'s network; `registered` receives the collection."""
    make_weights, build = bench.ARCHITECTURES[architecture]
    weights = make_weights(0)

    def build_model(inputs, collection):
        if collection is not None:
            registered.append(collection)
        return build(inputs, weights, collection)

    settings = bench.ConvnetSettings(batch_size=BATCH, architecture=architecture)
    return comparison_training.build_training_graph(
        spec, settings, 785, build_model, periodic=False)


def _input_factors_after_one_update(spec, batch, architecture="convnet"):
    """The raw covariance variable of every Kronecker block's input factor
    after one covariance update on `batch` (deterministic: no sampling
    involved; scale-and-shift blocks have none)."""
    registered = []
    ops = _build(spec, registered, architecture)
    with ops.graph.as_default(), tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(ops.cov_update_op, {ops.model.inputs: batch, ops.prev_inputs: batch})
        (collection,) = registered
        return [sess.run(block._input_factor.get_cov_var())
                for block in collection.get_blocks() if hasattr(block, "_input_factor")]


def _batch(rng, size):
    return bench.pack(rng.rand(size, 28, 28, 1).astype(np.float32),
                      rng.randint(0, 10, size))


@pytest.mark.parametrize("architecture", ["convnet", "residual"])
def test_factors_come_from_the_first_rows_of_the_batch(rng, architecture):
    batch = _batch(rng, BATCH)
    plain = OptimizerSpec("kfac", 0.1, damping=0.1)
    quarter = OptimizerSpec("kfac", 0.1, damping=0.1, stats_batch_fraction=0.25)
    got = _input_factors_after_one_update(quarter, batch, architecture)
    want = _input_factors_after_one_update(plain, batch[:2], architecture)
    whole = _input_factors_after_one_update(plain, batch, architecture)
    assert len(got) == len(want) > 1
    for got_cov, want_cov, whole_cov in zip(got, want, whole):
        scale = np.abs(want_cov).max()
        np.testing.assert_allclose(got_cov, want_cov, atol=1e-5 * scale)
        # The whole batch's statistics are different: the test can tell.
        assert np.abs(whole_cov - want_cov).max() > 1e-3 * scale


def test_loss_and_training_step_use_the_whole_batch(rng):
    batch = _batch(rng, BATCH)
    spec = OptimizerSpec("kfac", 0.1, damping=0.1, stats_batch_fraction=0.25)
    ops = _build(spec, [])
    # The loss's gradient is that of the whole batch: the same as SGD's.
    sgd_ops = _build(OptimizerSpec("sgd", 0.1, momentum=0.0), [])
    grads = []
    for graph_ops in (ops, sgd_ops):
        with graph_ops.graph.as_default(), tf.Session() as sess:
            variables = tf.trainable_variables()
            sess.run(tf.global_variables_initializer())
            feed = {graph_ops.model.inputs: batch}
            loss = sess.run(graph_ops.model.loss, feed)
            grads.append(sess.run(tf.gradients(graph_ops.model.loss, variables), feed))
            want_loss, _ = sess.run(graph_ops.model.forward(tf.constant(batch), None))
        np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    assert len(grads[0]) == len(grads[1]) == 6
    for kfac_grad, sgd_grad in zip(*grads):
        np.testing.assert_allclose(kfac_grad, sgd_grad, rtol=1e-5,
                                   atol=1e-6 * np.abs(sgd_grad).max())


@pytest.mark.parametrize("fraction, batch_size, want", [
    (0.25, 256, 64), (0.5, 128, 64), (0.3, 10, 3), (0.01, 10, 1), (1.0, 7, 7),
    (None, 7, 7),
])
def test_stats_batch_size_rounds_up(fraction, batch_size, want):
    spec = OptimizerSpec("kfac", 0.1, stats_batch_fraction=fraction)
    assert comparison_training.stats_batch_size(spec, batch_size) == want


def test_quadratic_model_normalises_by_the_stats_batch():
    spec = OptimizerSpec("kfac_qmodel", 1.0, damping=0.1, stats_batch_fraction=0.5)
    ops = _build(spec, [])
    assert ops.optimizer._batch_size == BATCH // 2


@pytest.mark.parametrize("change, message", [
    (dict(kind="sgd", stats_batch_fraction=0.5), "K-FAC setting; 'sgd'"),
    (dict(kind="kfac", stats_batch_fraction=0.0), r"in \(0, 1\], got 0.0"),
    (dict(kind="kfac", stats_batch_fraction=1.5), r"in \(0, 1\], got 1.5"),
])
def test_bad_fractions_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        OptimizerSpec(learning_rate=0.1, **change)


def test_stats_batch_specs_differ_from_the_reference_only_in_their_statistics():
    specs = convnet_specs.stats_batch_specs()
    reference = convnet_specs.SAMPLED_EVERY_OTHER_STEP
    assert specs[:2] == [convnet_specs.SGD_REFERENCE, reference]
    assert [(s.stats_batch_fraction, s.cov_update_every) for s in specs[2:]] == [
        (0.25, 2), (0.25, 1), (0.5, 1)]
    for spec in specs[2:]:
        assert (spec.learning_rate, spec.damping, spec.norm_constraint,
                spec.sub_sample_patches) == (
            reference.learning_rate, reference.damping, reference.norm_constraint,
            reference.sub_sample_patches)
    assert len({spec.name for spec in specs}) == len(specs)


def test_no_registration_warning_for_the_separate_statistics_pass(recwarn):
    from kfac.ops.layer_collection import RegistrationWarning

    ops = _build(OptimizerSpec("kfac", 0.1, damping=0.1, stats_batch_fraction=0.5), [])
    assert not [w for w in recwarn if issubclass(w.category, RegistrationWarning)]
    assert ops.optimizer._lint is None
    # Only there: a plain K-FAC run keeps the linter's default.
    assert _build(OptimizerSpec("kfac", 0.1, damping=0.1), []).optimizer._lint == "warn"


def test_kfac_reference_is_the_fastest_stats_batch_run():
    # docs/benchmark/*_stats_batch_b256.md: a quarter of the batch, every step.
    fastest = convnet_specs.stats_batch_specs()[3]
    for architecture in ("convnet", "residual"):
        assert convnet_specs.KFAC_REFERENCES[architecture] == dataclasses.replace(
            fastest, label="kfac")
