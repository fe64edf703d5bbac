"""Tests of the residual convnet of the convnet benchmark (bench/residual.py):
the network against a float64 numpy forward pass, its registrations, and
that K-FAC trains it through the benchmark's graph."""

import os
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

# `bench` is a top-level folder of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import convnet as bench  # noqa: E402
from bench import convnet_specs  # noqa: E402
from bench import residual  # noqa: E402
from kfac.examples.comparison_training import OptimizerSpec  # noqa: E402
from kfac.ops import fisher_blocks  # noqa: E402
from kfac.ops import layer_collection as lc  # noqa: E402


def _conv_same(images, kernel, stride):
    """tf.nn.conv2d with SAME padding: TF pads `total // 2` before."""
    size, rows = kernel.shape[0], images.shape[1]
    out_rows = -(-rows // stride)
    total = max((out_rows - 1) * stride + size - rows, 0)
    before = total // 2
    padded = np.pad(images, ((0, 0), (before, total - before),
                             (before, total - before), (0, 0)))
    out = np.zeros((len(images), out_rows, out_rows, kernel.shape[3]))
    end = stride * (out_rows - 1) + 1
    for i in range(size):
        for j in range(size):
            out += padded[:, i:i + end:stride, j:j + end:stride, :] @ kernel[i, j]
    return out


def _conv_bn(weights, name, inputs, stride):
    pre = _conv_same(inputs, weights[name + "/kernel"], stride)
    mean = pre.mean(axis=(0, 1, 2))
    variance = pre.var(axis=(0, 1, 2))
    normalised = (pre - mean) / np.sqrt(variance + residual.BATCH_NORM_EPSILON)
    return normalised * weights[name + "/scale"] + weights[name + "/shift"]


def _block(weights, stage, inputs):
    hidden = np.maximum(_conv_bn(weights, stage + "_a", inputs, 1), 0.0)
    return np.maximum(inputs + _conv_bn(weights, stage + "_b", hidden, 1), 0.0)


def _numpy_logits(weights, images):
    stem = np.maximum(_conv_bn(weights, "stem", images, 1), 0.0)
    batch, rows = len(stem), stem.shape[1] // 2
    stem = stem.reshape(batch, rows, 2, rows, 2, -1).max(axis=(2, 4))
    stage1 = _block(weights, "stage1", stem)
    down = np.maximum(_conv_bn(weights, "down", stage1, 2), 0.0)
    pooled = _block(weights, "stage2", down).mean(axis=(1, 2))
    return pooled @ weights["linear/kernel"] + weights["linear/bias"]


def _random_weights(rng):
    """The initial weights in float64, with scales and shifts away from 1/0."""
    weights = {name: value.astype(np.float64)
               for name, value in residual.initial_weights(5).items()}
    for name in weights:
        if name.endswith(("/scale", "/shift", "/bias")):
            weights[name] = weights[name] + 0.3 * rng.randn(*weights[name].shape)
    return weights


def test_logits_match_numpy_in_float64(graph, rng):
    weights = _random_weights(rng)
    images = rng.rand(6, 28, 28, 1)
    params = {name: tf.constant(value) for name, value in weights.items()}
    logits = residual.logits(params, tf.constant(images))
    assert logits.shape.as_list() == [6, 10]
    with tf.Session(graph=graph) as sess:
        got = sess.run(logits)
    want = _numpy_logits(weights, images)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())


def test_initial_weights_are_seeded_and_shaped():
    weights = residual.initial_weights(3)
    for name, in_channels, out_channels, _ in residual.CONVOLUTIONS:
        kernel = weights[name + "/kernel"]
        assert kernel.shape == (3, 3, in_channels, out_channels)
        assert kernel.dtype == np.float32
        np.testing.assert_array_equal(weights[name + "/scale"], 1.0)
        np.testing.assert_array_equal(weights[name + "/shift"], 0.0)
    assert weights["linear/kernel"].shape == (residual.WIDE_CHANNELS, 10)
    again, other = residual.initial_weights(3), residual.initial_weights(4)
    np.testing.assert_array_equal(again["down/kernel"], weights["down/kernel"])
    assert not np.array_equal(other["down/kernel"], weights["down/kernel"])


def test_registration_covers_every_variable_with_its_layer_kind(graph):
    collection = lc.LayerCollection()
    inputs = tf.placeholder(tf.float32, [None, 785])
    model = bench.build_residual(inputs, residual.initial_weights(0), collection)
    assert set(collection.registered_variables) == set(model.params)
    assert len(model.params) == 3 * len(residual.CONVOLUTIONS) + 2
    kinds = [type(block) for block in collection.get_blocks()]
    assert kinds.count(fisher_blocks.ConvKFCBasicFB) == len(residual.CONVOLUTIONS)
    assert kinds.count(fisher_blocks.ScaleAndShiftFullFB) == len(residual.CONVOLUTIONS)
    assert kinds.count(fisher_blocks.FullyConnectedKFACBasicFB) == 1
    assert len(collection.losses) == 1


def test_benchmark_graph_evaluates_the_residual_network(rng):
    settings = bench.ConvnetSettings(architecture="residual")
    images = rng.rand(7, 28, 28, 1).astype(np.float32)
    labels = rng.randint(0, 10, 7)
    graph_ops = bench.build_training_graph(OptimizerSpec("sgd", 0.1), settings, 785)
    with graph_ops.graph.as_default(), tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        loss, accuracy = bench.evaluate_after(graph_ops, sess,
                                              bench.pack(images, labels), chunk=7)
    weights = {name: value.astype(np.float64)
               for name, value in residual.initial_weights(0).items()}
    logits = _numpy_logits(weights, images.astype(np.float64))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(loss, -log_probs[np.arange(7), labels].mean(), rtol=1e-4)
    assert accuracy == pytest.approx((logits.argmax(axis=1) == labels).mean())


@pytest.mark.parametrize("kind", ["kfac_qmodel", "kfac"])
def test_kfac_fits_a_batch_of_the_residual_network(rng, kind):
    settings = bench.ConvnetSettings(architecture="residual")
    optimizer = dict(convnet_specs.QMODEL, min_damping=1e-2) if kind == "kfac_qmodel" \
        else convnet_specs.REGULAR
    spec = OptimizerSpec(kind, inv_update_every=2, **optimizer)
    graph_ops = bench.build_training_graph(spec, settings, 785)
    batch = bench.pack(rng.rand(32, 28, 28, 1).astype(np.float32),
                       rng.randint(0, 10, 32))
    feed = {graph_ops.model.inputs: batch, graph_ops.prev_inputs: batch}
    with graph_ops.graph.as_default(), tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        losses = [sess.run([graph_ops.model.loss, graph_ops.train_op], feed)[0]
                  for _ in range(12)]
    assert np.all(np.isfinite(losses)), losses
    # Random labels on one batch: memorising them takes the loss well below
    # its start near ln(10).
    assert losses[0] == pytest.approx(np.log(10), abs=0.5)
    assert min(losses[-3:]) < 0.7 * losses[0], losses
