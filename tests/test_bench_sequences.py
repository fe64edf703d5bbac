"""Tests of the sequences benchmark: packed rows, the model against a numpy
masked RNN, the registrations, the specs, the cost and target summaries, and
a tiny smoke run of the whole program."""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from absl import flags

# `bench` is a top-level folder of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import convnet  # noqa: E402
from bench import sequences as bench  # noqa: E402
from kfac.examples import rnn_mnist  # noqa: E402
from kfac.examples.comparison_training import OptimizerSpec  # noqa: E402
from kfac.ops import fisher_blocks as fb  # noqa: E402

SMALL = dict(hidden_size=5, batch_size=4, max_steps=2, eval_every=1)


def _rows(rng, count, min_length):
    images = rng.rand(count, 28, 28).astype(np.float32)
    labels = rng.randint(0, 10, count)
    lengths = rng.randint(min_length, 29, count).astype(np.int32)
    return rnn_mnist.zero_padding(images, lengths), labels, lengths


def _numpy_loss(weights, images, labels, lengths):
    """Mean cross-entropy of the RNN reading each image's first `length` rows."""
    (w, b), (v, c) = weights
    losses = []
    for image, label, length in zip(images, labels, lengths):
        state = np.zeros(b.shape, np.float64)
        for row in image[:length]:
            state = np.tanh(np.concatenate([row, state]) @ w + b)
        logits = state @ v + c
        logits = logits - logits.max()
        losses.append(np.log(np.exp(logits).sum()) - logits[label])
    return np.mean(losses)


def test_pack_and_unpack_round_trip(graph, rng):
    images, labels, lengths = _rows(rng, 5, 3)
    packed = bench.pack(images, labels, lengths)
    assert packed.shape == (5, bench.ROW_SIZE) and packed.dtype == np.float32
    with tf.Session(graph=graph) as sess:
        out = sess.run(bench.unpack(tf.constant(packed)))
    for got, want in zip(out, (images, labels, lengths)):
        np.testing.assert_array_equal(got, want)
    full = bench.pack(images, labels, None)
    np.testing.assert_array_equal(full[:, -1], 28)


def test_load_data_pads_as_the_example_does():
    train, eval_rows, test, source = bench.load_data(None, True, 100, 10, 0)
    assert source == "generated sequences"
    data = rnn_mnist.make_generated_data()
    padded, lengths = rnn_mnist.pad_to_random_lengths(data, 10)
    np.testing.assert_array_equal(train, bench.pack(padded[0], padded[1], lengths[0]))
    np.testing.assert_array_equal(test, bench.pack(padded[2], padded[3], lengths[1]))
    assert 10 <= train[:, -1].min() < train[:, -1].max() <= 28
    assert len(eval_rows) == 100
    # The evaluation rows are training rows.
    assert {row.tobytes() for row in eval_rows} <= {row.tobytes() for row in train}
    full_train = bench.load_data(None, True, 100, 28, 0)[0]
    np.testing.assert_array_equal(full_train[:, -1], 28)
    np.testing.assert_array_equal(full_train[:, :784], data[0].reshape([-1, 784]))


@pytest.mark.parametrize("min_length", [28, 6])
def test_model_loss_matches_a_numpy_rnn_on_each_real_row(graph, rng, min_length):
    images, labels, lengths = _rows(rng, 4, min_length)
    settings = bench.SequenceSettings(hidden_size=5, min_length=min_length)
    inputs = tf.placeholder(tf.float32, [None, bench.ROW_SIZE])
    model = bench.build_rnn(inputs, settings, "kron_expand")
    variables = tf.trainable_variables()
    other_images, other_labels, other_lengths = _rows(rng, 3, min_length)
    other = bench.pack(other_images, other_labels, other_lengths)
    with tf.Session(graph=graph) as sess:
        sess.run(tf.global_variables_initializer())
        # Nonzero biases so that they are checked too.
        sess.run([v.assign(rng.randn(*v.shape.as_list()) * 0.1) for v in variables
                  if v.op.name.endswith("bias")])
        values = sess.run(variables)
        loss = sess.run(model.loss, {inputs: bench.pack(images, labels, lengths)})
        other_loss = sess.run(model.loss_fn(tf.constant(other)))
    weights = [(values[0], values[1]), (values[2], values[3])]
    if min_length == 28:
        lengths = other_lengths = None
    full = np.full([4], 28)
    np.testing.assert_allclose(
        loss, _numpy_loss(weights, images, labels,
                          full if lengths is None else lengths), rtol=1e-5)
    np.testing.assert_allclose(
        other_loss, _numpy_loss(weights, other_images, other_labels,
                                full if other_lengths is None else other_lengths),
        rtol=1e-5)


@pytest.mark.parametrize(
    "approx, block_type",
    [("kron_expand", fb.FullyConnectedMultiIndepFB),
     ("kron_reduce", fb.FullyConnectedMultiReduceFB)])
@pytest.mark.parametrize("min_length", [28, 6])
def test_training_graph_registers_the_approximation_and_the_mask(
        approx, block_type, min_length):
    settings = bench.SequenceSettings(hidden_size=5, min_length=min_length)
    ops = bench.build_training_graph(
        bench.kfac_spec(approx, 0.003, 0.1), settings, bench.ROW_SIZE)
    with ops.graph.as_default():  # variables are dict keys in graph mode only
        blocks = list(ops.optimizer.layer_collection.get_blocks())
    recurrent = [block for block in blocks if type(block) is block_type]
    assert len(blocks) == 2 and len(recurrent) == 1
    assert recurrent[0].num_uses == 28
    assert recurrent[0].has_weights == (min_length < 28)


def test_training_graph_rejects_rows_of_the_wrong_width():
    with pytest.raises(ValueError, match="786 columns"):
        bench.build_training_graph(
            OptimizerSpec("sgd", 0.1), bench.SequenceSettings(), 785)


def test_specs_pair_expand_and_reduce_and_give_two_values_per_optimizer():
    for specs, values in ((bench.quick_specs(), 1), (bench.full_specs(), 2)):
        assert len({spec.name for spec in specs}) == len(specs)
        kfac = [s for s in specs if s.kind == "kfac"]
        settings = {(s.learning_rate, s.damping) for s in kfac}
        assert len(settings) == values
        assert sorted((s.learning_rate, s.damping, s.approximation) for s in kfac) == [
            (lr, damping, approx) for lr, damping in sorted(settings)
            for approx in bench.APPROXIMATIONS]
        for kind in ("adam", "sgd"):
            assert len({s.learning_rate for s in specs if s.kind == kind}) == values
    quick = {spec.kind: spec for spec in bench.quick_specs()}
    example = rnn_mnist.DEFAULT_HYPERPARAMETERS
    assert (quick["kfac"].learning_rate, quick["kfac"].damping) == (
        example["kfac"]["learning_rate"], example["kfac"]["damping"])
    assert quick["adam"].learning_rate == example["adam"]["learning_rate"]
    assert quick["kfac"].inv_update_every == rnn_mnist.INVERT_EVERY


def _run(spec, losses, seconds=1.0, steps=10):
    evals = [{"step": steps * i, "seconds": seconds * i, "loss": loss}
             for i, loss in enumerate(losses)]
    return {"name": spec.name, "evals": evals, "final_loss": losses[-1],
            "diverged": False, "steps": steps * (len(losses) - 1),
            "seconds": seconds * (len(losses) - 1),
            "config": {"optimizer": {"kind": spec.kind,
                                     "learning_rate": spec.learning_rate,
                                     "damping": spec.damping,
                                     "approximation": spec.approximation}}}


def test_target_is_the_best_adam_loss_and_step_cost_pairs_the_approximations():
    expand, reduce, other = (bench.kfac_spec("kron_expand", 0.003, 0.1),
                             bench.kfac_spec("kron_reduce", 0.003, 0.1),
                             bench.kfac_spec("kron_expand", 0.03, 1.0))
    record = {"runs": [
        _run(expand, [2.0, 0.5, 0.3], seconds=2.0),
        _run(reduce, [2.0, 0.38, 0.35], seconds=1.5),
        _run(other, [2.0, 0.9]),
        _run(OptimizerSpec("adam", 1e-3, label="adam lr=0.001"), [2.0, 0.8, 0.4]),
        _run(OptimizerSpec("adam", 3e-4, label="adam lr=0.0003"), [2.0, 1.0, 0.6]),
        _run(OptimizerSpec("sgd", 0.01, label="sgd lr=0.01"), [2.0, 1.5, 1.0]),
    ]}
    convnet.summarize_grid(record, target_family="adam")
    assert record["target"] == 0.4
    rows = {row["name"]: row for row in record["table"]}
    assert list(rows)[:2] == ["sgd", "adam"]
    # Adam needed 20 steps / 2 s; expand 20 steps / 4 s, reduce 10 / 1.5 s.
    assert rows[expand.name]["ratios"]["adam"] == {"steps": 1.0, "seconds": 0.5}
    assert rows[reduce.name]["steps"] == 10
    assert rows["sgd"]["steps"] is None
    cost = bench.step_cost(record["runs"])
    assert cost == [{"learning_rate": 0.003, "damping": 0.1, "expand_ms": 200.0,
                     "reduce_ms": 150.0, "ratio": 0.75}]


@pytest.mark.slow  # ~15 s: six RNN graphs with 28 steps, and their first runs
def test_smoke_run_writes_json_and_markdown(tmp_path):
    specs = bench.quick_specs()
    output_dir = str(tmp_path / "bench")
    flag_values = flags.FlagValues()
    bench.define_flags(flag_values)
    flag_values(["sequences", "--use_fake_data", "--quick", "--min_lengths=5",
                 "--eval_size=40", "--batch_size=8", "--hidden_size=4",
                 "--max_steps=2", "--eval_every=1", "--micro_steps=1",
                 "--micro_blocks=1", "--output_dir=" + output_dir])
    result = bench.run_from_flags(flag_values)
    with open(os.path.join(output_dir, "sequences.json")) as handle:
        saved = json.load(handle)
    (variant,) = saved["variants"]
    assert variant["settings"]["min_length"] == 5
    assert [run["name"] for run in variant["runs"]] == [spec.name for spec in specs]
    assert all(run["steps"] == 2 for run in variant["runs"])
    # Same weights, same evaluation rows: one initial loss.
    assert len({run["evals"][0]["loss"] for run in variant["runs"]}) == 1
    for run in variant["runs"]:
        assert 0.0 <= run["test_accuracy"] <= 1.0 and np.isfinite(run["test_loss"])
    best_adam = [run for run in variant["runs"] if run["name"] == "adam lr=0.001"]
    assert variant["target"] == best_adam[0]["final_loss"]
    micro = variant["micro"]
    assert set(micro["ms"]) == {"{} {}".format(approx, op)
                                for approx in bench.APPROXIMATIONS
                                for op in bench.MICRO_OPS}
    for op in bench.MICRO_OPS:
        assert micro["ratio_reduce_to_expand"][op] == pytest.approx(
            micro["ms"]["kron_reduce " + op] / micro["ms"]["kron_expand " + op])
    assert len(variant["step_cost"]) == 1
    assert saved["variants"][0]["target"] == result["variants"][0]["target"]
    with open(os.path.join(output_dir, "sequences.md")) as handle:
        text = handle.read()
    assert "## Padded sequences (lengths 5-28, masked)" in text
    assert "| kfac reduce lr=0.003 damping=0.1 | 2 |" in text
    assert "| cov_update (median, interleaved) |" in text
