"""Tests of the autoencoder benchmark: its selection logic and a tiny smoke run."""

import json
import math
import os
import sys

from absl import flags

# `bench` is a top-level folder of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import autoencoder as bench  # noqa: E402
from kfac.examples import autoencoder_mnist as ae  # noqa: E402
from kfac.examples import comparison  # noqa: E402


def _run(kind, learning_rate, final, damping=0.0, steps=10, seconds=2.0):
    spec = ae.OptimizerSpec(kind, learning_rate, damping=damping)
    evals = [
        {"step": 0, "seconds": 0.0, "loss": 500.0},
        {"step": steps, "seconds": seconds, "loss": final},
    ]
    return {
        "name": "%s %g" % (kind, learning_rate),
        "evals": evals,
        "final_loss": final,
        "diverged": final is None,
        "steps": steps,
        "seconds": seconds,
        "config": {
            "optimizer": {
                "kind": kind,
                "learning_rate": learning_rate,
                "damping": spec.damping,
            }
        },
    }


RUNS = [
    _run("sgd", 1e-4, 300.0),
    _run("sgd", 1e-3, 250.0),
    _run("sgd", 1e-2, None),
    _run("adam", 1e-3, 280.0),
    _run("adam", 1e-2, 260.0),
    _run("kfac", 0.1, 240.0, damping=1.0),
    _run("kfac", 0.3, 230.0, damping=1.0, steps=4, seconds=1.0),
]


def test_best_per_family_takes_the_lowest_final_loss_and_skips_divergence():
    best = bench.best_per_family(RUNS)
    assert {family: run["name"] for family, run in best.items()} == {
        "sgd": "sgd 0.001",
        "adam": "adam 0.01",
        "kfac": "kfac 0.3",
    }


def test_grid_edge_warnings_name_the_family_and_grid():
    warnings = bench.grid_edge_warnings(RUNS, bench.best_per_family(RUNS))
    assert warnings == [
        "best adam learning rate 0.01 is at the edge of the grid [0.001, 0.01]"
    ]


def test_grid_specs_cover_every_configuration():
    options = dict(
        sgd_lrs=[1e-3, 1e-2],
        adam_lrs=[1e-3],
        kfac_lrs=[0.1, 0.3],
        kfac_dampings=[1.0, 10.0],
        qmodel_dampings=[5.0],
    )
    specs = bench.grid_specs(options, inv_update_every=7, cov_ema_decay=0.5)
    assert [spec.kind for spec in specs] == ["sgd"] * 2 + ["adam"] + ["kfac"] * 4 + [
        "kfac_qmodel"
    ]
    assert specs[3].name == "kfac lr=0.1 damping=1" and specs[3].inv_update_every == 7
    assert specs[-1].cov_ema_decay == 0.5
    assert (specs[-1].learning_rate, specs[-1].momentum, specs[-1].damping) == (
        1.0,
        0.0,
        5.0,
    )
    assert len({spec.name for spec in specs}) == len(specs)
    specs = bench.grid_specs(options, dict(inv_update_every=10, cov_ema_decay=0.95),
                             inv_update_every=7, cov_ema_decay=0.5)
    regular = [spec for spec in specs if spec.kind == "kfac"]
    assert {(s.inv_update_every, s.cov_ema_decay) for s in regular} == {(10, 0.95)}
    assert not any(spec.warm_start_covariances for spec in regular)
    assert (specs[-1].inv_update_every, specs[-1].cov_ema_decay) == (7, 0.5)


def test_full_grids_span_ten_times_each_way():
    for name, size in (("sgd_lrs", 4), ("adam_lrs", 3)):
        grid = bench.FULL[name]
        assert len(grid) >= size
        middle = sorted(grid)[len(grid) // 2]
        assert min(grid) <= middle / 10 * 1.0001 and max(grid) >= middle * 10 / 1.0001


def test_markdown_report_from_a_synthetic_result():
    best = bench.best_per_family(RUNS)
    records = [dict(best[family], name=family) for family in ("sgd", "adam", "kfac")]
    result = {
        "settings": {"batch_size": 512},
        "options": {"steps": 10, "kfac_steps": 4},
        "data": "fake",
        "eval_size": 100,
        "environment": {"tensorflow": "x", "cpus": 2},
        "runs": RUNS,
        "best": {f: r["name"] for f, r in best.items()},
        "warnings": ["w"],
        "target": 250.0,
        "table": comparison.target_table(records, 250.0, bench.REFERENCES),
        "micro": {
            "seconds": {"sgd_step": 0.1, "kfac_inv_update": 0.5},
            "repeats": 3,
            "ratio_to_sgd_step": {"sgd_step": 1.0, "kfac_inv_update": 5.0},
            "schedules": {
                "kfac": {
                    "inv_update_every": 10,
                    "cov_update_every": 2,
                    "spread_inverse_updates": True,
                }
            },
        },
    }
    text = bench.markdown_report(result)
    # SGD reached 250 after 10 steps and 2 s, K-FAC after 4 steps and 1 s; Adam never.
    assert "| kfac | 230.0000 | 230.0000 | 4 | 1.0 | 2.50 | 2.00 | — | — |" in text
    assert "| adam | 260.0000 | 260.0000 | — | — | — | — | — | — |" in text
    assert "| kfac_inv_update | 0.5000 | 5.00 |" in text
    assert (
        "kfac_periodic: covariances every 2 steps, inverses every 10 steps (spread)"
        in text
    )
    assert "| sgd 0.01 | diverged | 10 | 2.0 |" in text
    assert "| kfac 0.3 | 230.0000 | 4 | 1.0 |" in text
    assert "Warning: w." in text
    assert "SGD and Adam 10 steps, K-FAC 4 steps;" in text


def test_smoke_run_writes_json_and_markdown(tmp_path):
    output_dir = str(tmp_path / "bench")
    flag_values = flags.FlagValues()
    bench.define_flags(flag_values)
    flag_values(
        [
            "autoencoder",
            "--quick",
            "--use_fake_data",
            "--layer_sizes=6,3,6",
            "--code_layer=1",
            "--batch_size=32",
            "--steps=4",
            "--kfac_steps=3",
            "--eval_every=2",
            "--kfac_eval_every=1",
            "--eval_size=64",
            "--sgd_lrs=0.01,0.1",
            "--adam_lrs=0.01",
            "--kfac_lrs=0.1",
            "--kfac_dampings=1",
            "--qmodel_dampings=1",
            "--micro_repeats=1",
            "--inv_update_every=2",
            "--cov_update_every=2",
            "--output_dir=" + output_dir,
        ]
    )
    result = bench.run_from_flags(flag_values)
    with open(os.path.join(output_dir, bench.JSON_FILE)) as json_file:
        saved = json.load(json_file)
    assert saved["options"]["steps"] == 4 and saved["eval_size"] == 64
    assert [run["name"] for run in saved["runs"]] == [
        "sgd lr=0.01",
        "sgd lr=0.1",
        "adam lr=0.01",
        "kfac lr=0.1 damping=1",
        "kfac_qmodel damping=1",
    ]
    assert [run["steps"] for run in saved["runs"]] == [4, 4, 4, 3, 3]
    assert [e["step"] for e in saved["runs"][3]["evals"]] == [0, 1, 2, 3]
    # The schedule flags given set regular momentum's too; the others keep
    # the original's schedule (decay 0.95), not the qmodel's (0.9).
    regular, qmodel = (saved["runs"][i]["config"]["optimizer"] for i in (3, 4))
    assert (regular["cov_update_every"], regular["inv_update_every"]) == (2, 2)
    assert (regular["cov_ema_decay"], qmodel["cov_ema_decay"]) == (0.95, 0.9)
    assert set(saved["best"]) == {"sgd", "adam", "kfac", "kfac_qmodel"}
    assert saved["target"] == comparison.final_loss(
        [run for run in saved["runs"] if run["name"] == saved["best"]["sgd"]][0]
    )
    assert [row["name"] for row in saved["table"]] == [
        "sgd", "adam", "kfac", "kfac_qmodel"]
    micro = saved["micro"]
    expected = {"sgd_step"}
    for family in ("kfac", "kfac_qmodel"):
        expected |= {
            family + "_train_step",
            family + "_train_and_cov_step",
            family + "_cov_update",
            family + "_inv_update",
            family + "_periodic_step",
            family + "_periodic_max_step",
        }
    assert set(micro["seconds"]) == expected
    assert micro["ratio_to_sgd_step"]["sgd_step"] == 1.0
    assert micro["schedules"]["kfac"]["cov_update_every"] == 2
    # The largest step of a cycle is at least its mean step.
    seconds = micro["seconds"]
    assert seconds["kfac_periodic_max_step"] >= seconds["kfac_periodic_step"]
    assert all(math.isfinite(value) and value > 0 for value in seconds.values())
    with open(os.path.join(output_dir, bench.MARKDOWN_FILE)) as markdown_file:
        markdown = markdown_file.read()
    assert markdown == bench.markdown_report(result)
    assert "## Steps and seconds to the best SGD configuration's final loss" in markdown
    assert "## Per-step cost" in markdown
