"""The examples' progress bar and TensorBoard logs."""

import glob
import io
import json
import os

import numpy as np
import pytest
from absl import flags
from summaries_helpers import read_scalars

from kfac.examples import _health_plot
from kfac.examples import _progress
from kfac.examples import autoencoder_mnist as ae
from kfac.examples import embedding_text
from kfac.examples import rnn_mnist


class _FakeClock(object):
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_text_rate_and_eta():
    clock = _FakeClock()
    bar = _progress.ProgressBar("kfac", total=100, stream=io.StringIO(), clock=clock)
    assert bar.text(25, 0.5, 5.0) == (
        "kfac  [#####---------------]  25/100  loss 0.5000  5.0 steps/s  ETA 0:15")
    assert _progress.ProgressBar(clock=clock).text(7, None, 2.0) == (
        "step 7  3.5 steps/s")
    assert _progress.format_duration(3725) == "1:02:05"


def test_plain_lines_off_a_terminal_are_rate_limited():
    clock, stream = _FakeClock(), io.StringIO()
    bar = _progress.ProgressBar(total=10, stream=stream, plain_seconds=30.0,
                                clock=clock)
    for step in range(1, 11):
        clock.now = 10.0 * step  # 10 s per step
        bar.update(step, 1.0 / step)
    bar.close(10, 0.1)
    lines = stream.getvalue().splitlines()
    # Steps 1, 4, 7, 10 (every 30 s), then the final line.
    assert [line.split()[1] for line in lines] == ["1/10", "4/10", "7/10", "10/10",
                                                  "10/10"]
    assert "\r" not in stream.getvalue()


def test_terminal_line_is_rewritten_in_place():
    clock, stream = _FakeClock(), _Terminal()
    bar = _progress.ProgressBar(total=4, stream=stream, refresh_seconds=0.0,
                                clock=clock)
    for step in range(1, 5):
        clock.now = float(step)
        bar.update(step)
    bar.close(4)
    text = stream.getvalue()
    assert text.count("\r\x1b[K") == 5 and text.endswith("\n")
    assert text.count("\n") == 1


def _small_sequences():
    rng = np.random.RandomState(0)
    x = rng.rand(64, 4, 3).astype(np.float32)
    y = rng.randint(0, 10, size=64).astype(np.int64)
    return x, y, x[:32], y[:32]


@pytest.mark.parametrize("example", ["rnn_mnist", "embedding_text"])
def test_examples_write_losses_and_curvature_summaries(tmp_path, example):
    if example == "rnn_mnist":
        rnn_mnist.train(hidden_size=6, batch_size=16, num_steps=5, log_every=2,
                        data=_small_sequences(), logdir=str(tmp_path))
        layer = "rnn/weights"
    else:
        embedding_text.train(
            batch_size=16, num_steps=5, log_every=2, logdir=str(tmp_path),
            data=embedding_text.make_generated_data(
                num_train=64, num_test=32, sequence_length=4, vocab_size=50,
                num_classes=3),
            vocab_size=50, embedding_dim=4, num_classes=3)
        layer = None
    (run_dir,) = glob.glob(os.path.join(str(tmp_path), example, "*"))
    values = read_scalars(run_dir)
    assert "loss" in values and np.isfinite(values["loss"])
    assert values["kfac/skipped_steps"] == 0.0
    conditions = [tag for tag in values if tag.endswith("condition_number")]
    assert conditions and all(values[tag] >= 1.0 for tag in conditions)
    if layer is not None:
        assert "kfac/%s/input_factor/condition_number" % layer in values


def test_demo_records_and_plots_curvature_health(tmp_path):
    """The autoencoder comparison (`make demo`'s program) on generated data:
    the K-FAC runs' records hold damping and condition numbers at every
    evaluation, the health PNG is written, and TensorBoard gets one folder per
    run."""
    output_dir, logdir = str(tmp_path / "demo"), str(tmp_path / "runs")
    flag_values = flags.FlagValues()
    ae.define_flags(flag_values)
    flag_values(["autoencoder_mnist", "--use_fake_data", "--layer_sizes=8,4,8",
                 "--code_layer=1", "--batch_size=32", "--max_steps=10",
                 "--eval_every=5", "--eval_size=64", "--optimizers=sgd,kfac_qmodel",
                 "--output_dir=" + output_dir, "--logdir=" + logdir])
    ae.main([], flag_values)
    with open(os.path.join(output_dir, ae.RECORD_FILE)) as json_file:
        sgd, qmodel = json.load(json_file)["runs"]
    assert "health" not in sgd
    assert [point["step"] for point in qmodel["health"]] == [0, 5, 10]
    first, later = qmodel["health"][0], qmodel["health"][1:]
    # 784 → 8 → 4 → 8 → 784 on fake images: 4 layers, 2 factors each.
    factors = [name for name in first if name not in ("step", "damping")]
    assert len(factors) == 8
    # Warm-started covariances are zero before the first step: no pi split yet.
    assert all(first[name] is None for name in factors)
    assert all(point[name] >= 1.0 for point in later for name in factors)
    assert first["damping"] == pytest.approx(ae.DEFAULTS["qmodel_damping"])
    assert os.path.getsize(os.path.join(output_dir, ae.HEALTH_PLOT_FILE)) > 0
    (run_dir,) = glob.glob(os.path.join(logdir, "autoencoder_mnist", "*"))
    assert sorted(os.listdir(run_dir)) == ["kfac_qmodel", "sgd"]
    values = read_scalars(os.path.join(run_dir, "kfac_qmodel"))
    assert {"eval_loss", "kfac/damping", "kfac/rho"} <= set(values)
    assert "kfac/damping" not in read_scalars(os.path.join(run_dir, "sgd"))


def test_health_plot_needs_a_kfac_run(tmp_path):
    assert not _health_plot.plot_health([{"name": "sgd", "evals": []}],
                                        str(tmp_path / "health.png"))
