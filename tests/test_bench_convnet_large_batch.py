"""Tests of K-FAC at larger batches in the convnet benchmark
(`OptimizerSpec.batch_multiple`): the comparisons' specs, and runs whose
K-FAC steps take several consecutive mini-batches."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

# `bench` is a top-level folder of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_convnet_helpers import best_mode_specs  # noqa: E402
from bench_convnet_helpers import smoke_run  # noqa: E402

from bench import convnet as bench  # noqa: E402
from bench import convnet_specs  # noqa: E402
from kfac.examples.comparison_training import OptimizerSpec  # noqa: E402


@pytest.mark.parametrize("architecture", ["convnet", "residual"])
def test_large_batch_specs_are_the_best_and_kfac_at_multiples_of_the_batch(
        architecture):
    specs = best_mode_specs("large_batch", architecture)
    best = convnet_specs.best_specs(architecture)
    assert specs[:3] == best and all(spec.batch_multiple == 1 for spec in best)
    assert [spec.batch_multiple for spec in specs[3:]] == [2, 4]
    for spec in specs[3:]:
        assert spec.name == "kfac batch x{}".format(spec.batch_multiple)
        unchanged = dataclasses.replace(spec, batch_multiple=1, label=best[2].label)
        assert unchanged == best[2]


@pytest.mark.parametrize("architecture", ["convnet", "residual"])
def test_large_batch_tuning_changes_the_batch_and_at_most_one_more_setting(
        architecture):
    specs = best_mode_specs("large_batch_tune", architecture)
    sgd, adam, kfac = convnet_specs.best_specs(architecture)
    assert specs[:2] == [sgd, adam]
    fields = ("batch_multiple", "stats_batch_fraction", "norm_constraint", "damping")
    changed = [{field for field in fields
                if getattr(spec, field) != getattr(kfac, field)} for spec in specs[2:]]
    assert changed == [{"batch_multiple"}, {"batch_multiple", "stats_batch_fraction"},
                       {"batch_multiple", "norm_constraint"},
                       {"batch_multiple", "damping"}]
    assert [spec.batch_multiple for spec in specs[2:]] == [3, 4, 4, 4]
    assert specs[3].stats_batch_fraction == kfac.stats_batch_fraction / 2
    for spec in specs[2:]:
        assert spec.name.startswith("kfac batch x{}".format(spec.batch_multiple))
        others = {field: getattr(kfac, field) for field in fields}
        assert dataclasses.replace(spec, label=kfac.label, **others) == kfac


def test_large_batch_best_specs_are_kfac_at_4x_with_less_damping():
    specs = best_mode_specs("large_batch_best", "convnet")
    sgd, adam, kfac = convnet_specs.best_specs("convnet")
    assert specs[:2] == [sgd, adam]
    best, eighth = specs[2:]
    assert (best.batch_multiple, best.damping) == (4, 0.03)
    assert best.name == "kfac batch x4 damping=0.03"
    assert dataclasses.replace(best, batch_multiple=1, damping=kfac.damping,
                               label=kfac.label) == kfac
    assert eighth.name == best.name + " stats 1/8"
    assert dataclasses.replace(eighth, stats_batch_fraction=0.25,
                               label=best.label) == best


@pytest.mark.parametrize("architecture", ["convnet", "residual"])
@pytest.mark.parametrize("mode, multiple, factors", [("large_batch_wd", 4, (1, 3)),
                                                     ("double_batch_wd", 2, (1, 2))])
def test_large_batch_weight_decay_specs_add_kfac_at_a_multiple_with_scaled_decays(
        architecture, mode, multiple, factors):
    _, specs, _, _ = convnet_specs.comparison_specs(mode, architecture)
    best = convnet_specs.best_weight_decay_specs(architecture)
    assert specs[:3] == best
    kfac = best[2]
    assert [spec.weight_decay for spec in specs[3:]] == pytest.approx(
        [factor * kfac.weight_decay for factor in factors])
    for spec in specs[3:]:
        assert (spec.batch_multiple, spec.damping) == (multiple, 0.03)
        assert spec.name == "kfac batch x{} damping=0.03 wd={:g}".format(
            multiple, spec.weight_decay)
        assert dataclasses.replace(spec, batch_multiple=1, damping=kfac.damping,
                                   weight_decay=kfac.weight_decay,
                                   label=kfac.label) == kfac


@pytest.mark.slow
def test_large_batch_mode_trains_kfac_on_joined_batches(tmp_path):
    output_dir, record = smoke_run(tmp_path, "--large_batch")
    with open(os.path.join(output_dir, "convnet_large_batch_b8.json")) as handle:
        saved = json.load(handle)
    runs = saved["runs"]
    assert [run["name"] for run in runs] == ["sgd", "adam", "kfac", "kfac batch x2",
                                             "kfac batch x4"]
    batch_sizes = [run["config"]["settings"]["batch_size"] for run in runs]
    assert batch_sizes == [8, 8, 8, 16, 32]
    assert all(run["steps"] == 2 for run in runs)
    # The same initial weights; different batches give different first steps.
    first = [run["evals"][0]["loss"] for run in runs]
    np.testing.assert_allclose(first, first[0], rtol=1e-6)
    after = [run["evals"][1]["loss"] for run in runs[2:]]
    gaps = [abs(a - b) for i, a in enumerate(after) for b in after[i + 1:]]
    assert min(gaps) > 1e-4 * abs(first[0])
    assert record["best"]["kfac"] in ("kfac", "kfac batch x2", "kfac batch x4")


@pytest.mark.slow
def test_a_batch_multiple_trains_like_the_larger_batch(tmp_path):
    # One SGD step with 2 x 8 rows is the step on the 16-row batch, which is
    # the first two 8-row batches joined (minibatch_indices): same weights.
    settings = bench.ConvnetSettings(batch_size=8, max_steps=1, eval_every=1)
    train, eval_rows, test, _ = bench.load_data(None, True, 40, settings.seed)
    spec = OptimizerSpec("sgd", 0.1, momentum=0.9)

    def first_step_loss(run_spec, run_settings):
        run = bench.train_one(run_spec, run_settings, train, eval_rows, test, None,
                              bench.build_training_graph)
        return run["evals"][1]["loss"]

    joined = first_step_loss(dataclasses.replace(spec, batch_multiple=2), settings)
    larger = first_step_loss(spec, dataclasses.replace(settings, batch_size=16))
    smaller = first_step_loss(spec, settings)
    np.testing.assert_allclose(joined, larger, rtol=1e-6)
    assert abs(joined - smaller) > 1e-4 * abs(smaller)
