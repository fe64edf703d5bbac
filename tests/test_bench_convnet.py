"""Tests of the convnet benchmark: packed rows, the model against a numpy
forward pass, the test metrics, and a tiny smoke run of the whole program."""

import dataclasses
import json
import math
import os
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

# `bench` is a top-level folder of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_convnet_helpers import best_mode_specs  # noqa: E402
from bench_convnet_helpers import smoke_run  # noqa: E402
from example_helpers import assert_first_sgd_step  # noqa: E402

from bench import convnet as bench  # noqa: E402
from bench import convnet_specs  # noqa: E402
from kfac.examples import comparison_training  # noqa: E402
from kfac.examples.comparison_training import OptimizerSpec  # noqa: E402


def _numpy_conv_same(images, kernel, bias):
    """Stride-1 SAME convolution (cross-correlation, as tf.nn.conv2d)."""
    size = kernel.shape[0]
    pad = size // 2
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows, cols = images.shape[1:3]
    out = np.zeros(images.shape[:3] + (kernel.shape[3],))
    for i in range(size):
        for j in range(size):
            out += padded[:, i:i + rows, j:j + cols, :] @ kernel[i, j]
    return out + bias


def _numpy_max_pool_same(images, size, stride):
    """SAME max-pooling: the padding (at the end for these sizes) never wins."""
    rows = images.shape[1]
    out_rows = -(-rows // stride)
    total = max((out_rows - 1) * stride + size - rows, 0)
    before = total // 2
    padded = np.pad(images, ((0, 0), (before, total - before), (before, total - before),
                             (0, 0)), constant_values=-np.inf)
    out = np.full((len(images), out_rows, out_rows, images.shape[3]), -np.inf)
    for i in range(size):
        for j in range(size):
            end = stride * out_rows
            out = np.maximum(out, padded[:, i:i + end:stride, j:j + end:stride])
    return out


def _numpy_loss_and_accuracy(weights, images, labels):
    activations = images.reshape([-1, 28, 28, 1]).astype(np.float64)
    for kernel, bias in weights[:-1]:
        pre = _numpy_conv_same(activations, kernel.astype(np.float64), bias)
        activations = _numpy_max_pool_same(np.maximum(pre, 0.0), bench.POOL_SIZE,
                                           bench.POOL_STRIDE)
    logits = activations.reshape([len(images), -1]) @ weights[-1][0] + weights[-1][1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(len(labels)), labels].mean()
    return loss, (logits.argmax(axis=1) == labels).mean()


def _data(rng, count):
    images = rng.rand(count, 28, 28, 1).astype(np.float32)
    labels = rng.randint(0, 10, count)
    return images, labels


def test_pack_and_unpack_round_trip(graph, rng):
    images, labels = _data(rng, 6)
    packed = bench.pack(images, labels)
    assert packed.shape == (6, 785) and packed.dtype == np.float32
    with tf.Session(graph=graph) as sess:
        out_images, out_labels = sess.run(bench.unpack(tf.constant(packed)))
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_labels, labels)


def test_initial_weights_are_glorot_uniform_with_zero_biases_and_seeded():
    weights = bench.initial_weights(3)
    assert [kernel.shape for kernel, _ in weights] == [
        (5, 5, 1, 16), (5, 5, 16, 16), (7 * 7 * 16, 10)]
    for kernel, bias in weights:
        fan_in = int(np.prod(kernel.shape[:-1]))
        fan_out = kernel.shape[-1] * int(np.prod(kernel.shape[:-2]))
        assert np.abs(kernel).max() <= math.sqrt(6.0 / (fan_in + fan_out))
        np.testing.assert_array_equal(bias, 0.0)
    np.testing.assert_array_equal(bench.initial_weights(3)[1][0], weights[1][0])
    assert not np.array_equal(bench.initial_weights(4)[1][0], weights[1][0])


def test_convnet_loss_and_accuracy_match_numpy(graph, rng):
    images, labels = _data(rng, 5)
    # Nonzero biases so that they are checked too.
    weights = [(kernel, rng.randn(*bias.shape).astype(np.float32) * 0.1)
               for kernel, bias in bench.initial_weights(1)]
    inputs = tf.placeholder(tf.float32, [None, 785])
    model = bench.build_convnet(inputs, weights)
    with tf.Session(graph=graph) as sess:
        sess.run(tf.global_variables_initializer())
        loss, accuracy = sess.run([model.loss, model.accuracy],
                                  {inputs: bench.pack(images, labels)})
        other = bench.pack(*_data(rng, 4))
        loss_fn_value = sess.run(model.loss_fn(tf.constant(other)))
    want_loss, want_accuracy = _numpy_loss_and_accuracy(weights, images, labels)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    assert accuracy == pytest.approx(want_accuracy)
    want_other, _ = _numpy_loss_and_accuracy(
        weights, other[:, :784], other[:, 784].astype(int))
    np.testing.assert_allclose(loss_fn_value, want_other, rtol=1e-5)


def test_registration_covers_every_layer(graph):
    from kfac.ops import layer_collection as lc

    collection = lc.LayerCollection()
    inputs = tf.placeholder(tf.float32, [None, 785])
    model = bench.build_convnet(inputs, bench.initial_weights(0), collection)
    want = {var for layer in model.params for var in layer}
    assert set(collection.registered_variables) == want
    assert len(collection.losses) == 1


def test_evaluate_after_weights_chunks_by_their_size(graph, rng):
    images, labels = _data(rng, 11)
    spec = OptimizerSpec("sgd", 0.1, momentum=0.9)
    graph_ops = bench.build_training_graph(spec, bench.ConvnetSettings(), 785)
    with graph_ops.graph.as_default(), tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        loss, accuracy = bench.evaluate_after(
            graph_ops, sess, bench.pack(images, labels), chunk=4)
    want_loss, want_accuracy = _numpy_loss_and_accuracy(
        bench.initial_weights(0), images, labels)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    assert accuracy == pytest.approx(want_accuracy)


def test_training_graph_rejects_rows_of_the_wrong_width():
    with pytest.raises(ValueError, match="785 columns"):
        bench.build_training_graph(
            OptimizerSpec("sgd", 0.1), bench.ConvnetSettings(), 784)


def test_amortized_specs_update_statistics_less_often():
    specs = convnet_specs.amortized_specs()
    assert specs[0] == convnet_specs.SGD_REFERENCE
    schedules = {(s.kind, s.cov_update_every, s.inv_update_every) for s in specs[1:]}
    assert schedules == {(kind, cov, inv) for kind in ("kfac", "kfac_qmodel")
                         for cov, inv in ((5, 20), (10, 50))}
    assert all(s.spread_inverse_updates for s in specs[1:])
    assert len({spec.name for spec in specs}) == len(specs)


@pytest.mark.parametrize("make_specs, pairs", [
    (convnet_specs.ekfac_specs, [(None, convnet_specs.INVERSE_PERIOD),
                                 ("ekfac", convnet_specs.INVERSE_PERIOD),
                                 ("ekfac", 5 * convnet_specs.INVERSE_PERIOD)]),
    (convnet_specs.reduce_specs, [(None, convnet_specs.INVERSE_PERIOD),
                          ("kron_reduce", convnet_specs.INVERSE_PERIOD)]),
], ids=["ekfac", "reduce"])
def test_paired_specs_differ_only_in_the_approximation(make_specs, pairs):
    specs = make_specs()
    assert specs[0].kind == "sgd" and specs[0].name == "sgd"
    by_kind = {}
    for spec in specs[1:]:
        by_kind.setdefault(spec.kind, []).append(spec)
    assert set(by_kind) == {"kfac", "kfac_qmodel"}
    for runs in by_kind.values():
        assert [(s.approximation, s.inv_update_every) for s in runs] == pairs
        assert len({(s.learning_rate, s.damping, s.momentum, s.min_damping)
                    for s in runs}) == 1
    assert len({spec.name for spec in specs}) == len(specs)


@pytest.mark.slow
def test_smoke_run_writes_json_and_markdown(tmp_path):
    output_dir, record = smoke_run(tmp_path, "--ekfac")
    with open(os.path.join(output_dir, "convnet_ekfac_b8.json")) as handle:
        saved = json.load(handle)
    names = [spec.name for spec in convnet_specs.ekfac_specs()]
    assert [run["name"] for run in saved["runs"]] == names
    assert all(run["steps"] == 2 for run in saved["runs"])
    for run in saved["runs"]:
        assert 0.0 <= run["test_accuracy"] <= 1.0 and np.isfinite(run["test_loss"])
        assert [e["step"] for e in run["evals"]] == [0, 1, 2]
    # Every run starts from the same weights on the same evaluation rows.
    assert len({run["evals"][0]["loss"] for run in saved["runs"]}) == 1
    _, eval_rows, _, _ = bench.load_data(None, True, 40, 0)
    want, _ = _numpy_loss_and_accuracy(bench.initial_weights(0), eval_rows[:, :784],
                                       eval_rows[:, 784].astype(int))
    np.testing.assert_allclose(saved["runs"][0]["evals"][0]["loss"], want, rtol=1e-5)
    assert saved["target"] == record["target"]
    with open(os.path.join(output_dir, "convnet_ekfac_b8.md")) as handle:
        text = handle.read()
    assert "| kfac ekfac inv=50 | 2 |" in text


def _run(name, kind, learning_rate, losses, seconds_per_eval=1.0):
    evals = [{"step": 10 * i, "seconds": seconds_per_eval * i, "loss": loss}
             for i, loss in enumerate(losses)]
    return {"name": name, "evals": evals, "final_loss": losses[-1], "diverged": False,
            "steps": 10 * (len(losses) - 1),
            "config": {"optimizer": {"kind": kind, "learning_rate": learning_rate}}}


def test_grids_span_ten_times_each_way_of_their_best_values():
    # The best values measured: convnet (docs/benchmark/convnet.md), then the
    # residual convnet (docs/benchmark/residual.md).
    for grid, best in ((convnet_specs.SGD_LRS, 0.03), (convnet_specs.ADAM_LRS, 1e-3),
                       (convnet_specs.RESIDUAL_SGD_LRS, 0.1),
                       (convnet_specs.RESIDUAL_ADAM_LRS, 1e-2)):
        assert len(grid) >= 4 and best in grid
        assert min(grid) <= best / 10 * 1.0001 and max(grid) >= best * 10 / 1.0001
    specs = convnet_specs.grid_specs()
    assert [s.kind for s in specs[:10]] == ["sgd"] * 5 + ["adam"] * 5
    assert specs[10:] == convnet_specs.kfac_specs()
    assert len({spec.name for spec in specs}) == len(specs)
    sampled = [s for s in convnet_specs.kfac_specs() if s.sub_sample_patches]
    assert sampled and {s.kind for s in sampled} == {"kfac", "kfac_qmodel"}


def test_summarize_grid_targets_the_best_sgd_run_and_compares_every_kfac_run():
    record = {"runs": [
        _run("sgd lr=0.01", "sgd", 0.01, [2.0, 1.0, 0.8]),
        _run("sgd lr=0.1", "sgd", 0.1, [2.0, 0.9, 0.5]),
        _run("adam lr=0.001", "adam", 1e-3, [2.0, 0.6, 0.4]),
        _run("kfac_qmodel", "kfac_qmodel", 1.0, [2.0, 0.45], seconds_per_eval=0.5),
        _run("kfac", "kfac", 0.1, [2.0, 0.7]),
    ]}
    bench.summarize_grid(record)
    assert record["best"] == {"sgd": "sgd lr=0.1", "adam": "adam lr=0.001",
                              "kfac_qmodel": "kfac_qmodel", "kfac": "kfac"}
    assert record["target"] == 0.5
    rows = {row["name"]: row for row in record["table"]}
    assert list(rows) == ["sgd", "adam", "kfac_qmodel", "kfac"]
    # SGD needed 20 steps / 2 s, Adam 20 steps / 2 s, qmodel 10 steps / 0.5 s.
    assert (rows["kfac_qmodel"]["steps"], rows["kfac_qmodel"]["seconds"]) == (10, 0.5)
    assert rows["kfac_qmodel"]["ratios"]["sgd"] == {"steps": 2.0, "seconds": 4.0}
    assert rows["kfac_qmodel"]["ratios"]["adam"] == {"steps": 2.0, "seconds": 4.0}
    assert rows["kfac"]["steps"] is None


def test_plot_grid_draws_the_best_run_per_family_on_a_log_axis(tmp_path, monkeypatch):
    record = {"target": 0.5, "runs": [
        _run("sgd lr=0.01", "sgd", 0.01, [2.0, 1.0, 0.8]),
        _run("sgd lr=0.1", "sgd", 0.1, [2.0, 0.9, 0.5]),
        _run("adam lr=0.001", "adam", 1e-3, [2.0, 0.6, 0.4]),
        _run("kfac a", "kfac", 0.1, [2.0, 0.7]),
        _run("kfac b", "kfac", 0.1, [2.0, 0.6]),
    ]}
    calls = []
    monkeypatch.setattr(bench.comparison, "plot_records",
                        lambda runs, path, target, **kw: calls.append(
                            ([r["name"] for r in runs], path, target, kw)) or True)
    assert bench.plot_grid(record, str(tmp_path / "grid.png"))
    names, path, target, options = calls[0]
    assert names == ["sgd lr=0.1", "adam lr=0.001", "kfac b"]
    assert target == 0.5 and options["log_y"]
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    assert bench.plot_grid(record, str(tmp_path / "grid.png"))
    assert (tmp_path / "grid.png").stat().st_size > 0


@pytest.mark.parametrize("kind", ["sgd", "adam", "kfac", "kfac_qmodel"])
def test_decay_halves_the_learning_rate_after_its_start(kind):
    spec = OptimizerSpec(kind, 0.4, damping=0.1, decay_start=100, decay_half_life=50)
    graph_ops = bench.build_training_graph(spec, bench.ConvnetSettings(), 785)
    optimizer = graph_ops.optimizer
    with graph_ops.graph.as_default(), tf.Session() as sess:
        rate = (optimizer.learning_rate_tensor if kind.startswith("kfac")
                else optimizer._lr if kind == "adam" else optimizer._learning_rate)
        step = tf.train.get_global_step()
        sess.run(tf.global_variables_initializer())
        got = []
        for value in (0, 100, 150, 250):
            step.load(value, sess)
            got.append(sess.run(rate))
    np.testing.assert_allclose(got, [0.4, 0.4, 0.2, 0.05], rtol=1e-6)


@pytest.mark.parametrize("kind", ["sgd", "adam", "kfac", "kfac_qmodel"])
def test_budget_decay_halves_the_learning_rate_by_the_budget_spent(kind):
    spec = OptimizerSpec(kind, 0.4, damping=0.1, decay_clock="budget",
                         decay_start=0.5, decay_half_life=0.1)
    graph_ops = bench.build_training_graph(spec, bench.ConvnetSettings(), 785)
    optimizer = graph_ops.optimizer
    with graph_ops.graph.as_default(), tf.Session() as sess:
        rate = (optimizer.learning_rate_tensor if kind.startswith("kfac")
                else optimizer._lr if kind == "adam" else optimizer._learning_rate)
        (spent,) = tf.get_collection(comparison_training.BUDGET_SPENT)
        sess.run(tf.global_variables_initializer())
        # The step count plays no part.
        tf.train.get_global_step().load(10 ** 6, sess)
        got = [sess.run(rate, {spent: value}) for value in (0.0, 0.5, 0.6, 0.8, 1.0)]
        unfed = sess.run(rate)
    np.testing.assert_allclose(got, [0.4, 0.4, 0.2, 0.05, 0.0125], rtol=1e-6)
    assert unfed == pytest.approx(0.4, rel=1e-6)


def test_trainer_steps_with_the_learning_rate_of_the_budget_spent():
    """SGD without momentum: the step is `-rate·gradient`, the rate that of the
    fraction of the budget `Trainer.step` was given (0.7: 0.4·0.5²)."""
    spec = OptimizerSpec("sgd", 0.4, momentum=0.0, decay_clock="budget",
                         decay_start=0.5, decay_half_life=0.1)
    train, _, _, _ = bench.load_data(None, True, 16, 0)
    graph_ops = bench.build_training_graph(spec, bench.ConvnetSettings(), 785)
    assert_first_sgd_step(graph_ops, spec, train[:8], rate=0.1, budget_spent=0.7)


def test_a_budget_decay_needs_a_time_budget():
    train, eval_rows, test, _ = bench.load_data(None, True, 16, 0)
    settings = bench.ConvnetSettings(batch_size=8, max_steps=1, max_seconds=None)
    spec = OptimizerSpec("sgd", 0.1, decay_clock="budget", decay_half_life=0.1)
    with pytest.raises(ValueError, match="sgd: a learning-rate decay on the "
                       "budget's clock needs max_seconds"):
        bench.train_one(spec, settings, train, eval_rows, test)


def test_no_decay_keeps_the_constant_learning_rate(graph):
    spec = OptimizerSpec("sgd", 0.4)
    assert comparison_training.learning_rate_of(
        spec, tf.train.get_or_create_global_step()) == 0.4


@pytest.mark.parametrize("change, message", [
    (dict(decay_half_life=0.0), "decay_half_life must be > 0, got 0.0"),
    (dict(decay_start=-1, decay_half_life=10), "decay_start must be >= 0, got -1"),
    (dict(decay_clock="epochs"), "decay_clock must be one of .*'epochs'"),
])
def test_bad_decay_settings_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        OptimizerSpec("kfac", 0.1, **change)


def test_budgets_record_the_test_metrics_when_the_clock_passes_them():
    train, eval_rows, test, _ = bench.load_data(None, True, 16, 0)
    # Budget 0 is passed by the first step (the last here); 1e6 never.
    settings = bench.ConvnetSettings(batch_size=8, max_steps=1, max_seconds=None,
                                     eval_every=1, budgets=(0.0, 1e6))
    record = bench.train_one(OptimizerSpec("sgd", 0.1), settings, train, eval_rows,
                             test)
    assert len(record["budgets"]) == 1
    entry = record["budgets"][0]
    assert entry["budget"] == 0.0 and entry["step"] == 1
    assert entry["seconds"] == record["seconds"]
    # Taken after the same (only) step as the final test metrics.
    assert entry["test_loss"] == pytest.approx(record["test_loss"], rel=1e-6)
    assert entry["test_accuracy"] == record["test_accuracy"]
    no_budgets = bench.train_one(
        OptimizerSpec("sgd", 0.1), dataclasses.replace(settings, budgets=()), train,
        eval_rows, test)
    assert "budgets" not in no_budgets


def test_format_budget_metrics_gives_each_run_its_budgets():
    runs = [{"name": "sgd", "budgets": [
                {"budget": 30.0, "test_accuracy": 0.81, "test_loss": 0.52},
                {"budget": 60.0, "test_accuracy": 0.85, "test_loss": 0.41}]},
            {"name": "kfac", "budgets": [
                {"budget": 30.0, "test_accuracy": 0.8, "test_loss": 0.55}]}]
    lines = bench.format_budget_metrics(runs).strip().splitlines()
    assert lines[0] == "| run | test acc / loss at 30 s | test acc / loss at 60 s |"
    assert lines[2] == "| sgd | 0.8100 / 0.5200 | 0.8500 / 0.4100 |"
    assert lines[3] == "| kfac | 0.8000 / 0.5500 | — |"
    assert bench.format_budget_metrics([{"name": "sgd"}]) == ""


def test_schedule_and_residual_specs_decay_only_where_labelled():
    for specs in (convnet_specs.schedule_specs(), convnet_specs.residual_kfac_specs()):
        assert len({spec.name for spec in specs}) == len(specs)
        for spec in specs:
            assert ("decay" in spec.name) == (spec.decay_half_life is not None)
    assert convnet_specs.schedule_specs()[0] == convnet_specs.SGD_REFERENCE
    specs = convnet_specs.grid_specs("residual")
    rates = {kind: [spec.learning_rate for spec in specs if spec.kind == kind]
             for kind in ("sgd", "adam")}
    assert rates == {"sgd": list(convnet_specs.RESIDUAL_SGD_LRS),
                     "adam": list(convnet_specs.RESIDUAL_ADAM_LRS)}
    assert specs[len(rates["sgd"]) + len(rates["adam"]):] == \
        convnet_specs.residual_kfac_specs()


def test_tuning_specs_change_one_setting_of_the_residual_runs_each():
    specs = convnet_specs.tuning_specs()
    assert specs[0].kind == "sgd" and specs[0].learning_rate == 0.1
    bases = {spec.kind: spec for spec in convnet_specs.residual_kfac_specs()
             if spec.name in ("kfac", "kfac_qmodel")}
    for spec in specs[1:]:
        base = dataclasses.asdict(bases[spec.kind])
        changed = {name for name, value in dataclasses.asdict(spec).items()
                   if name != "label" and value != base[name]}
        assert len(changed) == 1, (spec.name, changed)
        # The label names the change and its value.
        (name,) = changed
        short = {"learning_rate": "lr", "norm_constraint": "nc"}.get(name, name)
        label_name, label_value = spec.name.split()[-1].split("=")
        assert label_name == short
        assert float(label_value) == pytest.approx(getattr(spec, name))
    assert len({spec.name for spec in specs}) == len(specs)


def test_combined_specs_join_the_helpful_changes():
    specs = convnet_specs.combined_specs()
    assert specs[0].kind == "sgd" and specs[0].learning_rate == 0.1
    settings = [(s.damping, s.norm_constraint, s.decay_half_life, s.cov_update_every)
                for s in specs[1:]]
    assert settings == [(0.1, 1e-3, None, 1), (0.1, 1e-3, 500, 1), (0.1, 0.01, 500, 1),
                        (0.1, 1e-3, None, 5)]
    learning_rate = convnet_specs.REGULAR["learning_rate"]
    assert all(s.kind == "kfac" and s.learning_rate == learning_rate for s in specs[1:])


def test_sampled_specs_say_their_schedule_and_sampling():
    specs = convnet_specs.sampled_specs()
    settings = [(s.sub_sample_patches, s.cov_update_every, s.inv_update_every,
                 s.learning_rate) for s in specs[1:]]
    assert settings == [(True, 1, 10, 0.1), (True, 2, 10, 0.1), (True, 5, 20, 0.1),
                        (False, 5, 20, 0.1), (True, 5, 20, 0.3)]
    for spec in specs[1:]:
        assert (spec.kind, spec.damping, spec.norm_constraint) == ("kfac", 0.1, 1e-3)
        assert ("sampled" in spec.name) == spec.sub_sample_patches
        assert ("cov every {}".format(spec.cov_update_every) in spec.name) == (
            spec.cov_update_every > 1)
    assert len({spec.name for spec in specs}) == len(specs)


@pytest.mark.parametrize("make_specs", [
    convnet_specs.ekfac_specs, convnet_specs.reduce_specs,
    convnet_specs.amortized_specs, convnet_specs.schedule_specs,
    convnet_specs.tuning_specs, convnet_specs.combined_specs,
    convnet_specs.sampled_specs, convnet_specs.sampled_tuning_specs])
def test_paired_comparisons_start_with_the_named_reference(make_specs):
    # The target of a paired comparison is the best loss of the run named
    # comparison.REFERENCE: without it there is no table.
    from kfac.examples import comparison

    names = [spec.name for spec in make_specs()]
    assert names[0] == comparison.REFERENCE
    assert names.count(comparison.REFERENCE) == 1


@pytest.mark.parametrize("architecture", ["convnet", "residual"])
def test_comparison_specs_use_the_architectures_sgd_reference(architecture):
    reference = convnet_specs.SGD_REFERENCES[architecture]
    assert reference.learning_rate == {"convnet": 0.03, "residual": 0.1}[architecture]
    for mode, (make_specs, title) in convnet_specs.PAIRED_MODES.items():
        name, specs, got_title, references = convnet_specs.comparison_specs(
            mode, architecture)
        assert name == architecture + "_" + mode and got_title == title
        assert specs == [reference] + make_specs()[1:]
        assert references == ("sgd",)
    name, specs, title, references = convnet_specs.comparison_specs(None, architecture)
    assert (name, title, references) == (architecture, "Optimizers", ("sgd", "adam"))
    assert specs == convnet_specs.grid_specs(architecture)
    _, specs, _, _ = convnet_specs.comparison_specs(None, architecture, kfac_only=True)
    assert specs == [reference] + convnet_specs.KFAC_SPECS[architecture]()


@pytest.mark.parametrize("architecture", ["convnet", "residual"])
def test_best_specs_are_the_grids_best_and_kfacs_best(architecture):
    sgd_lrs, adam_lrs = convnet_specs.GRIDS[architecture]
    specs = best_mode_specs("best", architecture)
    assert [spec.name for spec in specs] == ["sgd", "adam", "kfac"]
    sgd, adam, kfac = specs
    assert sgd == convnet_specs.SGD_REFERENCES[architecture]
    assert sgd.learning_rate in sgd_lrs and adam.learning_rate in adam_lrs
    assert kfac.kind == "kfac" and kfac.sub_sample_patches
    assert (kfac.stats_batch_fraction, kfac.cov_update_every) == (0.25, 1)


@pytest.mark.parametrize("architecture", ["convnet", "residual"])
def test_annealed_best_specs_are_the_best_halving_in_the_budgets_second_half(
        architecture):
    name, specs, title, references = convnet_specs.comparison_specs(
        "best", architecture, annealed=True)
    assert name == architecture + "_best_annealed" and references == ("sgd", "adam")
    assert "annealed" in title
    _assert_annealed(specs, convnet_specs.best_specs(architecture))
    assert [spec.name for spec in specs] == ["sgd", "adam", "kfac"]


def test_annealed_tuned_grid_is_the_tuned_grid_halving_in_the_second_half():
    name, specs, title, references = convnet_specs.comparison_specs(
        None, "residual", tuned_kfac=True, annealed=True)
    assert name == "residual_tuned_annealed" and references == ("sgd", "adam")
    assert title == "Optimizers, annealed in the second half"
    _assert_annealed(specs, convnet_specs.grid_specs("residual", tuned_kfac=True))


def _assert_annealed(specs, plain_specs):
    """`specs` are `plain_specs` (without a decay) with `ANNEALED`'s decay."""
    assert len(specs) == len(plain_specs)
    for spec, plain in zip(specs, plain_specs):
        assert plain.decay_half_life is None
        assert (spec.decay_clock, spec.decay_start, spec.decay_half_life) == (
            "budget", 0.5, 0.1)
        assert dataclasses.replace(spec, decay_clock="steps", decay_start=0,
                                   decay_half_life=None) == plain


@pytest.mark.parametrize("mode, tuned_kfac", [(None, False), ("sampled", False),
                                              ("sampled", True)])
def test_annealed_needs_the_best_runs_or_the_tuned_grid(mode, tuned_kfac):
    with pytest.raises(ValueError, match="annealed applies to the best runs"):
        convnet_specs.comparison_specs(mode, "convnet", tuned_kfac=tuned_kfac,
                                       annealed=True)


@pytest.mark.parametrize("annealed", [False, True])
def test_weight_decay_specs_repeat_the_best_runs_once_per_decay(annealed):
    name, specs, title, references = convnet_specs.comparison_specs(
        "best", "residual", annealed=annealed, weight_decays=(0, 1e-4))
    plain_name, plain, plain_title, _ = convnet_specs.comparison_specs(
        "best", "residual", annealed=annealed)
    assert name == plain_name + "_wd" and title == plain_title + ", with weight decay"
    assert references == ("sgd", "adam")
    assert [spec.name for spec in specs] == [
        "sgd wd=0", "adam wd=0", "kfac wd=0",
        "sgd wd=0.0001", "adam wd=0.0001", "kfac wd=0.0001"]
    for spec, decay, base in zip(specs, (0.0,) * 3 + (1e-4,) * 3, plain * 2):
        assert spec.weight_decay == decay
        assert dataclasses.replace(spec, weight_decay=0.0, label=base.label) == base


@pytest.mark.parametrize("architecture", ["convnet", "residual"])
def test_regularized_specs_are_the_best_with_their_decays_and_kfac_changed_once(
        architecture):
    specs = best_mode_specs("regularized", architecture)
    decays = convnet_specs.BEST_WEIGHT_DECAYS[architecture]
    best = convnet_specs.best_specs(architecture)
    best_name, best_wd, _, best_references = convnet_specs.comparison_specs(
        "best_wd", architecture)
    assert best_name == architecture + "_best_wd"
    assert best_references == ("sgd", "adam")
    assert specs[:3] == best_wd
    assert [spec.name for spec in specs[:3]] == [
        "{} wd={:g}".format(spec.kind, decays[spec.kind]) for spec in best]
    _assert_annealed([dataclasses.replace(spec, weight_decay=0.0, label=plain.label)
                      for spec, plain in zip(specs[:3], best)], best)
    kfac = specs[2]
    assert kfac.weight_decay == decays["kfac"] == 3e-3
    fields = ("damping", "norm_constraint")
    changed = [[(name, getattr(spec, name)) for name in fields
                if getattr(spec, name) != getattr(kfac, name)] for spec in specs[3:]]
    assert changed == [[("damping", 0.3)], [("damping", 1.0)],
                       [("norm_constraint", 1e-4)], [("norm_constraint", 1e-2)]]
    for spec in specs[3:]:
        assert spec.name.startswith("kfac wd=0.003 ")
        assert dataclasses.replace(spec, damping=kfac.damping, label=kfac.label,
                                   norm_constraint=kfac.norm_constraint) == kfac
    with pytest.raises(ValueError, match="weight_decays apply to the best runs"):
        convnet_specs.comparison_specs("regularized", architecture,
                                       weight_decays=(1e-4,))


@pytest.mark.parametrize("architecture, at_edge", [("convnet", ["kfac"]),
                                                    ("residual", ["sgd", "kfac"])])
def test_stronger_decay_extends_the_grid_past_the_edge_only(architecture, at_edge):
    specs = best_mode_specs("stronger_decay", architecture)
    best_wd = convnet_specs.best_weight_decay_specs(architecture)
    assert specs[:3] == best_wd
    base = {spec.kind: spec for spec in best_wd}
    extended = [(spec.kind, spec.weight_decay) for spec in specs[3:]]
    assert extended == [(kind, decay) for kind in at_edge for decay in (6e-3, 1e-2)]
    for spec in specs[3:]:
        assert spec.name == "{} wd={:g}".format(spec.kind, spec.weight_decay)
        assert dataclasses.replace(spec, weight_decay=3e-3,
                                   label=base[spec.kind].label) == base[spec.kind]


def test_weight_decays_need_the_best_runs():
    with pytest.raises(ValueError, match="weight_decays apply to the best runs"):
        convnet_specs.comparison_specs(None, "convnet", tuned_kfac=True,
                                       weight_decays=(1e-4,))


def test_format_best_at_budgets_gives_each_familys_best_test_accuracy():
    def run(name, kind, *accuracies):
        return {"name": name, "config": {"optimizer": {"kind": kind}},
                "budgets": [{"budget": budget, "test_accuracy": accuracy,
                             "test_loss": 1.0}
                            for budget, accuracy in zip((60.0, 180.0), accuracies)]}
    runs = [run("sgd wd=0", "sgd", 0.90, 0.91), run("sgd wd=1e-4", "sgd", 0.89, 0.92),
            run("kfac wd=0", "kfac", 0.93), run("kfac wd=1e-4", "kfac", 0.91, 0.90)]
    lines = bench.format_best_at_budgets(runs).strip().splitlines()
    assert lines[0] == "| best test accuracy at | sgd | kfac |"
    assert lines[2] == "| 60 s | 0.9000 (sgd wd=0) | 0.9300 (kfac wd=0) |"
    assert lines[3] == "| 180 s | 0.9200 (sgd wd=1e-4) | 0.9000 (kfac wd=1e-4) |"
    # One run per family: the budget table says it all.
    assert bench.format_best_at_budgets(runs[1:3]) == ""
    assert bench.format_best_at_budgets(
        [dict(entry, budgets=[]) for entry in runs]) == ""


@pytest.mark.parametrize("architecture", ["convnet", "residual"])
def test_tuned_kfac_grid_is_the_grids_and_kfacs_best(architecture):
    name, specs, _, references = convnet_specs.comparison_specs(
        None, architecture, tuned_kfac=True)
    assert name == architecture + "_tuned" and references == ("sgd", "adam")
    sgd_lrs, adam_lrs = convnet_specs.GRIDS[architecture]
    assert specs[:-1] == convnet_specs.grid_specs(architecture)[:len(sgd_lrs)
                                                                + len(adam_lrs)]
    assert specs[-1] == convnet_specs.KFAC_REFERENCES[architecture]


@pytest.mark.slow
def test_best_mode_reports_like_the_grid_and_names_the_batch(tmp_path):
    output_dir, record = smoke_run(tmp_path, "--best")
    with open(os.path.join(output_dir, "convnet_best_b8.json")) as handle:
        saved = json.load(handle)
    assert [run["name"] for run in saved["runs"]] == ["sgd", "adam", "kfac"]
    assert saved["best"] == {"sgd": "sgd", "adam": "adam", "kfac": "kfac"}
    # The grid's target: the final loss of the best SGD run.
    assert record["target"] == saved["runs"][0]["final_loss"]
    assert os.path.exists(os.path.join(output_dir, "convnet_best_b8.md"))


@pytest.mark.slow
def test_seed_changes_the_weights_and_data_and_names_the_outputs(tmp_path):
    output_dir, record = smoke_run(tmp_path, "--best_wd", "--seed=1")
    with open(os.path.join(output_dir, "convnet_best_wd_b8_seed1.json")) as handle:
        saved = json.load(handle)
    assert saved["settings"]["seed"] == 1
    assert [run["name"] for run in saved["runs"]] == [
        "sgd wd=0.0001", "adam wd=0.0003", "kfac wd=0.003"]
    losses = []
    for seed in (0, 1):
        _, eval_rows, _, _ = bench.load_data(None, True, 40, seed)
        loss, _ = _numpy_loss_and_accuracy(bench.initial_weights(seed),
                                           eval_rows[:, :784],
                                           eval_rows[:, 784].astype(int))
        losses.append(loss)
    first = saved["runs"][0]["evals"][0]["loss"]
    np.testing.assert_allclose(first, losses[1], rtol=1e-5)
    assert abs(first - losses[0]) > 1e-3 * abs(losses[0])
    assert record["best"] == {"sgd": "sgd wd=0.0001", "adam": "adam wd=0.0003",
                              "kfac": "kfac wd=0.003"}


def test_sampled_tuning_changes_one_setting_of_the_best_kfac_each():
    specs = convnet_specs.sampled_tuning_specs()
    base = convnet_specs.SAMPLED_EVERY_OTHER_STEP
    assert specs[0] == convnet_specs.SGD_REFERENCE
    assert dataclasses.replace(specs[1], label=base.label) == base
    fields = ("damping", "norm_constraint", "learning_rate", "cov_ema_decay")
    for spec in specs[2:]:
        changed = [name for name in fields
                   if getattr(spec, name) != getattr(base, name)]
        assert len(changed) == 1
        short = {"learning_rate": "lr", "norm_constraint": "nc"}.get(changed[0],
                                                                      changed[0])
        label_name, label_value = spec.name.split()[-1].split("=")
        assert label_name == short
        assert float(label_value) == pytest.approx(getattr(spec, changed[0]))
        assert dataclasses.replace(spec, label=base.label,
                                   **{changed[0]: getattr(base, changed[0])}) == base
    assert len({spec.name for spec in specs}) == len(specs)
