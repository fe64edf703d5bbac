"""Tests of the deep-autoencoder example (tiny layer sizes and generated data)."""

import dataclasses
import io
import json
import math
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from absl import flags

import kfac
from kfac.examples import autoencoder_mnist as ae
from kfac.examples import comparison
from kfac.examples import comparison_training

INPUT_SIZE = 16
LAYER_SIZES = (12, 8, 4, 8, 12)
CODE_LAYER = 2
SETTINGS = ae.TrainSettings(
    batch_size=32,
    max_steps=20,
    eval_every=5,
    seed=3,
    layer_sizes=LAYER_SIZES,
    code_layer=CODE_LAYER,
)
SPECS = {
    "sgd": ae.OptimizerSpec("sgd", 0.02),
    "adam": ae.OptimizerSpec("adam", 0.01),
    "kfac": ae.OptimizerSpec("kfac", 0.1, damping=0.1, inv_update_every=5),
    "kfac_qmodel": ae.OptimizerSpec(
        "kfac_qmodel", 1.0, damping=1.0, momentum=0.0, inv_update_every=5
    ),
}


def numpy_loss(weights, images, code_layer):
    """Mean over images of the summed Bernoulli cross-entropy, by explicit loops."""
    total = 0.0
    for image in images.astype(np.float64):
        activations = image
        for index, (kernel, bias) in enumerate(weights):
            pre = np.array(
                [
                    sum(activations[i] * kernel[i, j] for i in range(len(activations)))
                    + bias[j]
                    for j in range(kernel.shape[1])
                ]
            )
            linear = index in (code_layer, len(weights) - 1)
            activations = pre if linear else np.tanh(pre)
        probs = 1.0 / (1.0 + np.exp(-activations))
        total -= sum(
            x * math.log(p) + (1 - x) * math.log(1 - p) for x, p in zip(image, probs)
        )
    return total / len(images)


@pytest.fixture
def images():
    return ae.make_fake_images(256, INPUT_SIZE, seed=1)


def test_fake_images_have_structure_and_range():
    images = ae.make_fake_images(100, 20, seed=0)
    assert images.shape == (100, 20) and images.dtype == np.float32
    assert 0.0 < images.min() and images.max() < 1.0
    # Rank-8 logits: the centred logit matrix has 8 non-negligible singular values.
    logits = np.log(images / (1 - images))
    singular_values = np.linalg.svd(logits - logits.mean(0), compute_uv=False)
    assert singular_values[7] > 1e-2 * singular_values[0] > 0
    assert singular_values[8] < 1e-3 * singular_values[0]


def test_initial_weights_are_glorot_and_reproducible():
    weights = ae.initial_weights(INPUT_SIZE, LAYER_SIZES, seed=5)
    sizes = [INPUT_SIZE] + list(LAYER_SIZES) + [INPUT_SIZE]
    assert [kernel.shape for kernel, _ in weights] == list(zip(sizes[:-1], sizes[1:]))
    for (kernel, bias), fan_in, fan_out in zip(weights, sizes[:-1], sizes[1:]):
        assert np.abs(kernel).max() <= math.sqrt(6.0 / (fan_in + fan_out))
        assert not bias.any()
    again = ae.initial_weights(INPUT_SIZE, LAYER_SIZES, seed=5)
    assert all((a[0] == b[0]).all() for a, b in zip(weights, again))


def test_minibatches_are_epoch_permutations_in_a_fixed_order():
    first = comparison.minibatch_indices(10, 3, seed=7)
    batches = [next(first) for _ in range(6)]
    assert [len(batch) for batch in batches] == [3] * 6
    for epoch in (batches[:3], batches[3:]):  # 3 batches per epoch, 1 example dropped
        assert len(set(np.concatenate(epoch))) == 9
    second = comparison.minibatch_indices(10, 3, seed=7)
    assert all((next(second) == batch).all() for batch in batches)
    with pytest.raises(ValueError, match="batch_size must be in"):
        next(comparison.minibatch_indices(10, 11, seed=0))


def test_minibatches_of_a_multiple_are_consecutive_minibatches_joined():
    # `OptimizerSpec.batch_multiple`: the same examples in the same order,
    # but for the end of an epoch (26 = 3·8 + 2 = 1·16 + 10).
    small = comparison.minibatch_indices(26, 8, seed=3)
    large = comparison.minibatch_indices(26, 16, seed=3)
    for _ in range(2):  # epochs
        first, second, third = (next(small) for _ in range(3))
        np.testing.assert_array_equal(next(large), np.concatenate([first, second]))


def test_evaluation_subset_is_fixed():
    images = np.arange(50, dtype=np.float32).reshape(25, 2)
    subset = comparison.evaluation_subset(images, 10, seed=4)
    assert subset.shape == (10, 2)
    assert (subset == comparison.evaluation_subset(images, 10, seed=4)).all()
    assert comparison.evaluation_subset(images, 100, seed=4) is images


def test_loss_equals_numpy_bernoulli_cross_entropy(images):
    weights = ae.initial_weights(INPUT_SIZE, LAYER_SIZES, seed=2)
    # Larger biases so that the code layer's linearity matters.
    weights = [(kernel * 2.0, np.full_like(bias, 0.3)) for kernel, bias in weights]
    batch = images[:6]
    with tf.Graph().as_default():
        inputs = tf.placeholder(tf.float32, [None, INPUT_SIZE])
        model = ae.build_autoencoder(inputs, weights, CODE_LAYER)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            loss = sess.run(model.loss, {inputs: batch})
            other = sess.run(model.loss_fn(inputs), {inputs: batch[:3]})
    np.testing.assert_allclose(loss, numpy_loss(weights, batch, CODE_LAYER), rtol=1e-5)
    np.testing.assert_allclose(
        other, numpy_loss(weights, batch[:3], CODE_LAYER), rtol=1e-5
    )
    # The code layer is linear: the same model with tanh there gives another loss.
    assert abs(numpy_loss(weights, batch, None) - loss) > 1e-3


def test_registration_covers_every_layer_and_the_loss(images, tf_behavior):
    weights = ae.initial_weights(INPUT_SIZE, LAYER_SIZES, seed=2)
    batch = images[:8]
    with tf.Graph().as_default():
        inputs = tf.placeholder(tf.float32, [None, INPUT_SIZE])
        layer_collection = kfac.LayerCollection()
        model = ae.build_autoencoder(inputs, weights, CODE_LAYER, layer_collection)
        assert len(layer_collection.get_blocks()) == len(LAYER_SIZES) + 1
        assert set(layer_collection.registered_variables) == set(
            tf.trainable_variables()
        )
        total_loss = layer_collection.total_loss()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            summed, mean = sess.run([total_loss, model.loss], {inputs: batch})
    np.testing.assert_allclose(summed / len(batch), mean, rtol=1e-5)


def _check_loss_falls(kind, images):
    record = ae.train_one(SPECS[kind], SETTINGS, images, images[:64])
    losses = [evaluation["loss"] for evaluation in record["evals"]]
    assert [e["step"] for e in record["evals"]] == [0, 5, 10, 15, 20]
    assert record["steps"] == 20 and not record["diverged"]
    # Every optimizer starts from the same weights: the numpy loss of them.
    initial = ae.initial_weights(INPUT_SIZE, LAYER_SIZES, SETTINGS.seed)
    np.testing.assert_allclose(
        losses[0], numpy_loss(initial, images[:64], CODE_LAYER), rtol=1e-5
    )
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_first_order_optimizers_lower_the_loss(kind, images):
    _check_loss_falls(kind, images)


@pytest.mark.parametrize("kind", ["kfac", "kfac_qmodel"])
def test_kfac_lowers_the_loss(kind, images, tf_behavior):
    _check_loss_falls(kind, images)


def test_max_seconds_stops_training(images):
    settings = ae.TrainSettings(
        batch_size=32,
        max_steps=None,
        max_seconds=0.3,
        eval_every=1000,
        layer_sizes=LAYER_SIZES,
        code_layer=CODE_LAYER,
    )
    record = ae.train_one(SPECS["sgd"], settings, images, images[:64])
    # Only the clock can stop this run (no step limit); a slow machine may
    # manage a single step in 0.3 s.
    assert record["seconds"] >= 0.3 and record["steps"] >= 1
    assert record["evals"][-1]["step"] == record["steps"]


def test_divergence_stops_the_run(images):
    # A NaN batch makes the first loss NaN on every machine (a huge learning
    # rate need not: tanh saturates and the loss may stay finite).
    nan_images = np.full_like(images, np.nan)
    record = ae.train_one(SPECS["sgd"], SETTINGS, nan_images, images[:64])
    assert record["diverged"] and record["steps"] == 1 < SETTINGS.max_steps
    assert comparison.final_loss(record) == math.inf


def test_compare_writes_a_record_with_the_expected_fields(images, tmp_path):
    path = str(tmp_path / "out" / "record.json")
    specs = [SPECS["sgd"], SPECS["adam"]]
    settings = dataclasses.replace(SETTINGS, max_steps=10)
    result = ae.compare(specs, settings, images, images[:64], path, data="fake")
    with open(path) as json_file:
        saved = json.load(json_file)
    assert saved == json.loads(json.dumps(result))
    assert set(saved) >= {
        "settings",
        "data",
        "eval_size",
        "environment",
        "runs",
        "target",
        "table",
    }
    assert saved["settings"]["layer_sizes"] == list(LAYER_SIZES)
    for run, spec in zip(saved["runs"], specs):
        assert set(run) == {
            "name",
            "config",
            "evals",
            "steps",
            "seconds",
            "final_loss",
            "diverged",
        }
        assert run["name"] == spec.kind
        assert run["config"]["optimizer"]["learning_rate"] == spec.learning_rate
        assert run["evals"][0] == {
            "step": 0,
            "seconds": 0.0,
            "loss": run["evals"][0]["loss"],
        }
        seconds = [evaluation["seconds"] for evaluation in run["evals"]]
        assert seconds == sorted(seconds) and seconds[-1] == run["seconds"] > 0
        assert run["final_loss"] == run["evals"][-1]["loss"]
    assert saved["target"] == min(e["loss"] for e in saved["runs"][0]["evals"])
    assert [row["name"] for row in saved["table"]] == ["sgd", "adam"]


def _record(name, evals, diverged=False):
    evals = [{"step": s, "seconds": t, "loss": loss} for s, t, loss in evals]
    return {
        "name": name,
        "evals": evals,
        "final_loss": evals[-1]["loss"],
        "diverged": diverged,
    }


SYNTHETIC = [
    _record(
        "sgd", [(0, 0.0, 500.0), (10, 1.0, 300.0), (20, 2.0, 250.0), (30, 3.0, 240.0)]
    ),
    _record(
        "kfac", [(0, 0.0, 500.0), (5, 1.5, 260.0), (10, 3.0, 235.0), (15, 4.5, 200.0)]
    ),
    _record("adam", [(0, 0.0, 500.0), (30, 3.0, 245.0)]),
    _record("bad", [(0, 0.0, 500.0), (4, 0.5, None)], diverged=True),
]


def test_time_to_target_and_losses_from_synthetic_records():
    sgd, kfac_run, adam, bad = SYNTHETIC
    assert comparison.time_to_target(sgd, 240.0) == (30, 3.0)
    assert comparison.time_to_target(kfac_run, 240.0) == (10, 3.0)
    assert comparison.time_to_target(kfac_run, 260.0) == (5, 1.5)
    assert comparison.time_to_target(adam, 240.0) is None
    assert (
        comparison.best_loss(kfac_run) == 200.0
        and comparison.final_loss(kfac_run) == 200.0
    )
    assert comparison.best_loss(bad) == 500.0 and comparison.final_loss(bad) == math.inf


def test_target_table_from_synthetic_records():
    rows = comparison.target_table(SYNTHETIC, 240.0, references=("sgd", "adam"))
    by_name = {row["name"]: row for row in rows}
    assert (by_name["sgd"]["steps"], by_name["sgd"]["seconds"]) == (30, 3.0)
    assert by_name["sgd"]["ratios"]["sgd"] == {"steps": 1.0, "seconds": 1.0}
    assert (by_name["kfac"]["steps"], by_name["kfac"]["seconds"]) == (10, 3.0)
    assert by_name["kfac"]["ratios"]["sgd"] == {"steps": 3.0, "seconds": 1.0}
    assert by_name["kfac"]["ratios"]["adam"] == {"steps": None, "seconds": None}
    assert (
        by_name["kfac"]["final_loss"] == 200.0 and by_name["kfac"]["best_loss"] == 200.0
    )
    assert by_name["adam"]["steps"] is None
    assert by_name["adam"]["ratios"]["sgd"] == {"steps": None, "seconds": None}
    assert by_name["bad"]["final_loss"] is None and by_name["bad"]["best_loss"] == 500.0
    # A reference that did not run gets no ratio column.
    assert set(comparison.target_table(SYNTHETIC[1:], 240.0)[0]["ratios"]) == set()


def test_format_table_shows_numbers_and_gaps():
    text = comparison.format_table(comparison.target_table(SYNTHETIC, 240.0), 240.0)
    lines = text.splitlines()
    assert lines[0] == "Target: loss 240.0000"
    assert lines[2].split(" | ")[-1] == "sgd/this seconds |"
    assert "| kfac | 200.0000 | 200.0000 | 10 | 3.0 | 3.00 | 1.00 |" in lines
    assert "| adam | 245.0000 | 245.0000 | — | — | — | — |" in lines


def test_progress_updates_one_line_on_a_terminal_and_prints_lines_otherwise():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    plain, terminal = io.StringIO(), Terminal()
    for stream in (plain, terminal):
        progress = comparison.Progress(stream)
        progress.update("sgd", 10, 1.5, 123.25)
        progress.update("sgd", 20, 3.0, 100.5)
        progress.finish()
    assert plain.getvalue().count("\n") == 2 and "\r" not in plain.getvalue()
    assert "step     20" in plain.getvalue() and "100.5000" in plain.getvalue()
    assert terminal.getvalue().count("\r\x1b[K") == 2
    assert terminal.getvalue().count("\n") == 1


def test_bad_optimizer_kind_and_interval_are_rejected():
    with pytest.raises(ValueError, match="kind must be one of"):
        ae.OptimizerSpec("lbfgs", 0.1)
    with pytest.raises(ValueError, match="inv_update_every must be >= 1, got 0"):
        ae.OptimizerSpec("kfac", 0.1, inv_update_every=0)
    with pytest.raises(ValueError, match="batch_multiple must be >= 1, got 0"):
        ae.OptimizerSpec("kfac", 0.1, batch_multiple=0)


def _flag_values(argv):
    """The example's flags from `argv` (no TensorBoard logs unless asked)."""
    flag_values = flags.FlagValues()
    ae.define_flags(flag_values)
    if not any(arg.startswith("--logdir") for arg in argv):
        argv = argv + ["--logdir="]
    flag_values(["autoencoder_mnist"] + argv)
    return flag_values


def test_flags_pick_quick_or_full_defaults_unless_given():
    quick = _flag_values(["--quick", "--kfac_lr=0.5"])
    settings = ae.settings_from_flags(quick)
    assert settings.max_seconds == ae.QUICK_DEFAULTS["max_seconds"]
    assert settings.max_steps is None and settings.layer_sizes == ae.LAYER_SIZES
    specs = {spec.kind: spec for spec in ae.specs_from_flags(quick)}
    assert list(specs) == list(ae.OPTIMIZER_KINDS)
    assert specs["kfac"].learning_rate == 0.5
    assert specs["sgd"].learning_rate == ae.DEFAULTS["sgd_lr"]
    assert specs["kfac_qmodel"].momentum == 0.0
    # Regular momentum: the original's schedule; the quadratic model: the
    # example's; a flag given sets both.
    assert (specs["kfac"].cov_ema_decay, specs["kfac"].inv_update_every,
            specs["kfac"].cov_update_every) == (0.95, 10, 1)
    assert specs["kfac"].damping == 0.03
    assert not specs["kfac"].warm_start_covariances
    assert specs["kfac_qmodel"].cov_ema_decay == ae.DEFAULTS["cov_ema_decay"]
    assert specs["kfac_qmodel"].inv_update_every == ae.DEFAULTS["inv_update_every"]
    given = {spec.kind: spec for spec in ae.specs_from_flags(
        _flag_values(["--quick", "--inv_update_every=3", "--cov_ema_decay=0.5"]))}
    for kind in ("kfac", "kfac_qmodel"):
        assert (given[kind].inv_update_every, given[kind].cov_ema_decay) == (3, 0.5)
    full = ae.settings_from_flags(_flag_values(["--max_steps=7"]))
    assert full.max_steps == 7 and full.max_seconds == ae.DEFAULTS["max_seconds"]
    with pytest.raises(ValueError, match="--optimizers: unknown"):
        ae.specs_from_flags(_flag_values(["--optimizers=sgd,newton"]))


def test_main_runs_end_to_end_on_generated_data(tmp_path, capsys):
    output_dir = str(tmp_path / "demo")
    flag_values = _flag_values(
        [
            "--use_fake_data",
            "--layer_sizes=8,4,8",
            "--code_layer=1",
            "--batch_size=32",
            "--max_steps=10",
            "--eval_every=5",
            "--eval_size=64",
            "--optimizers=adam,sgd",
            "--output_dir=" + output_dir,
        ]
    )
    assert ae.main([], flag_values) is None  # app.run exits with status 0.
    out = capsys.readouterr().out
    assert "Steps and training seconds to reach the best SGD loss" in out
    assert "| adam |" in out and "fake (128 examples)" in out
    with open(os.path.join(output_dir, ae.RECORD_FILE)) as json_file:
        result = json.load(json_file)
    assert [run["name"] for run in result["runs"]] == ["adam", "sgd"]
    assert [e["step"] for e in result["runs"][1]["evals"]] == [0, 5, 10]
    assert result["target"] == min(e["loss"] for e in result["runs"][1]["evals"])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out
    else:
        assert os.path.getsize(os.path.join(output_dir, ae.PLOT_FILE)) > 0


def test_evaluate_loss_weights_chunks_by_size():
    values = np.arange(7, dtype=np.float32)  # chunks [0 1 2] [3 4 5] [6]
    loss = comparison.evaluate_loss(lambda chunk: np.float32(chunk.mean()), values, 3)
    assert loss == pytest.approx(3.0) and type(loss) is float


def test_missing_data_falls_back_to_generated_images_only_when_allowed(
    tmp_path, capsys
):
    missing = str(tmp_path / "no-such-folder")
    train, evaluation, source = ae.prepare_data(
        missing, False, eval_size=50, batch_size=8, seed=0, fallback_to_fake=True
    )
    assert source == "fake (50 examples)" and train.shape == (50, 784)
    assert evaluation is train  # eval_size >= number of images: all of them.
    assert "using generated images" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        ae.prepare_data(missing, False, eval_size=50, batch_size=8, seed=0)


def test_warm_start_is_the_collections_own_config():
    with tf.Graph().as_default():
        warm = comparison_training.layer_collection_for(ae.OptimizerSpec("kfac", 0.1))
        cold = comparison_training.layer_collection_for(
            ae.OptimizerSpec("kfac", 0.1, warm_start_covariances=False)
        )
    assert warm.config.init_covariances_at_zero and warm.config.zero_debias
    assert not (cold.config.init_covariances_at_zero or cold.config.zero_debias)
    # The module constants, the defaults of other collections, are untouched.
    assert kfac.KfacConfig.from_defaults() == kfac.KfacConfig()
    sgd = ae.OptimizerSpec("sgd", 0.1)
    assert comparison_training.layer_collection_for(sgd) is None


def test_spec_options_reach_the_collection_and_the_optimizer():
    spec = ae.OptimizerSpec("kfac_qmodel", 1.0, damping=0.1, momentum=0.0,
                            sub_sample_patches=True, min_damping=1e-3)
    with tf.Graph().as_default():
        collection = comparison_training.layer_collection_for(spec)
    assert collection.config.sub_sample_patches
    assert not collection.config.sub_sample_inputs
    settings = ae.TrainSettings(batch_size=8, layer_sizes=(4, 2, 4), code_layer=1)
    graph_ops = ae.build_training_graph(spec, settings, 16)
    assert graph_ops.optimizer._min_damping == 1e-3
    regular = ae.OptimizerSpec("kfac", 0.01, damping=0.03, norm_constraint=0.02,
                               sub_sample_inputs=True)
    with tf.Graph().as_default():
        collection = comparison_training.layer_collection_for(regular)
    assert collection.config.sub_sample_inputs
    graph_ops = ae.build_training_graph(regular, settings, 16)
    assert graph_ops.optimizer._norm_constraint == 0.02
