r"""Benchmark: K-FAC against tuned SGD and Adam on the deep autoencoder.

Trains the autoencoder of `kfac.examples.autoencoder_mnist` (the K-FAC
paper's MNIST autoencoder; here on Fashion-MNIST) with

* SGD with momentum 0.9 over a learning-rate grid,
* Adam over a learning-rate grid,
* K-FAC with regular momentum 0.9 and fixed damping (grid over learning rate
  and damping; inverses every 10 steps, covariances every step, decay 0.95,
  the original's settings for this task, unless the schedule flags are given),
* K-FAC with `momentum_type="qmodel"` and Levenberg-Marquardt damping
  adaptation (grid over the initial damping),

all from the same weights on the same mini-batches in the same order. SGD
and Adam run `--steps` steps (full: 3000), K-FAC runs `--kfac_steps` (full:
300; K-FAC steps are fewer and dearer, and the question is when each reaches
the target). The loss is evaluated on a fixed subset of the training images
(10,000 by default), every `--eval_every` steps for SGD/Adam and every
`--kfac_eval_every` for K-FAC. Per optimizer the best configuration is the
one with the lowest final loss; the target is the final loss of the best SGD
configuration. The report gives, per optimizer, the final loss and the steps
and seconds to reach the target, and the ratios SGD/K-FAC and Adam/K-FAC.
K-FAC runs use `PeriodicInvCovUpdateKfacOpt` (one training op that also
updates covariances and inverses on its schedule), so the clock counts all
of K-FAC's work. A micro-benchmark in the same run measures the median
seconds of an SGD step, of K-FAC's ops one by one (training step, training
step with covariance update, covariance update, full inverse update; regular
momentum and qmodel), and the mean and largest step of the periodic
optimizers as run in the grid.

Writes `<output_dir>/autoencoder.json`, `autoencoder.md` and (with
matplotlib) `autoencoder.png`.

Run:
  python -m bench.autoencoder --quick        # <= 5 minutes on 2 CPU cores
  python -m bench.autoencoder                # the full benchmark (~35 minutes)
"""

import dataclasses
import math
import os
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags

from bench.autoencoder_micro import micro_benchmark
from kfac.examples import _cli
from kfac.examples import autoencoder_mnist as ae
from kfac.examples import comparison
from kfac.examples import comparison_training

OUTPUT_DIR = os.path.join("bench", "results")
JSON_FILE = "autoencoder.json"
MARKDOWN_FILE = "autoencoder.md"
PLOT_FILE = "autoencoder.png"
FAMILIES = ("sgd", "adam", "kfac", "kfac_qmodel")
REFERENCES = ("sgd", "adam")

# The full run: SGD and Adam 3000 steps (the reference runs of issue #8),
# K-FAC 300. The SGD and Adam grids reach 10x each way of the best values
# found on Fashion-MNIST with batch 512 at 3000 steps (SGD 2e-3; 4e-3 stalls
# near loss 384; Adam 1e-3); K-FAC: regular momentum 0.9 with fixed damping
# and the original's settings for this task (lr 0.01, damping 0.03, the
# schedule of REGULAR_SCHEDULE; lr 0.03 with the qmodel's schedule needed a
# damping of 0.3 and missed the target), and qmodel with Levenberg-Marquardt
# damping starting at 0.03 or 0.1 (10 and 1 needed 110 and 80 steps, 0.03
# about 60).
FULL = dict(
    steps=3000,
    kfac_steps=300,
    eval_every=100,
    kfac_eval_every=5,
    eval_size=10000,
    sgd_lrs=[2e-4, 6e-4, 2e-3, 2e-2],
    adam_lrs=[1e-4, 1e-3, 1e-2],
    kfac_lrs=[0.01],
    kfac_dampings=[0.03, 0.1],
    qmodel_dampings=[0.03, 0.1],
    micro_repeats=20,
)
# Regular momentum's schedule (the original's for this task): inverses every
# 10 steps, covariances every step, decay 0.95.
REGULAR_SCHEDULE = dict(inv_update_every=10, cov_update_every=1, cov_ema_decay=0.95)
# --quick: the same kinds of runs, short and with small grids.
QUICK = dict(
    steps=300,
    kfac_steps=40,
    eval_every=25,
    kfac_eval_every=5,
    eval_size=2000,
    sgd_lrs=[6e-4, 2e-3, 6e-3],
    adam_lrs=[3e-4, 1e-3],
    kfac_lrs=[0.01],
    kfac_dampings=[0.03],
    qmodel_dampings=[0.1],
    micro_repeats=5,
)


# (type, name, default, help); a None default means FULL or QUICK.
FLAGS_TABLE = (
    ("string", "data_dir", None, "MNIST-format folder (default: Fashion-MNIST)."),
    ("bool", "use_fake_data", False, "Benchmark on generated images."),
    ("integer", "batch_size", 512, "Mini-batch size."),
    ("integer", "seed", 0, "Seed of weights, batch order and sampling."),
    ("bool", "quick", False, "A short run (<= 5 minutes on 2 CPU cores)."),
    ("string", "output_dir", OUTPUT_DIR, "Where the JSON, markdown and PNG go."),
    ("integer", "steps", None, "Steps per SGD and Adam run."),
    ("integer", "kfac_steps", None, "Steps per K-FAC run."),
    ("integer", "eval_every", None, "SGD/Adam: evaluate every this many steps."),
    ("integer", "kfac_eval_every", None, "K-FAC: evaluate every this many steps."),
    ("integer", "eval_size", None, "Images in the fixed evaluation subset."),
    ("list", "sgd_lrs", None, "SGD learning-rate grid."),
    ("list", "adam_lrs", None, "Adam learning-rate grid."),
    ("list", "kfac_lrs", None, "K-FAC (regular momentum) learning-rate grid."),
    ("list", "kfac_dampings", None, "K-FAC (regular momentum) damping grid."),
    ("list", "qmodel_dampings", None, "K-FAC qmodel initial-damping grid."),
    ("integer", "inv_update_every", 5, "K-FAC inverse update interval."),
    ("integer", "cov_update_every", 2, "K-FAC covariance update interval."),
    ("bool", "spread_inverse_updates", False, "Spread K-FAC inverses over steps."),
    ("float", "cov_ema_decay", 0.9, "K-FAC covariance moving-average decay."),
    ("integer", "micro_repeats", None, "Timed repetitions per micro-benchmark op."),
    ("list", "layer_sizes", [str(size) for size in ae.LAYER_SIZES], "Hidden sizes."),
    ("integer", "code_layer", ae.CODE_LAYER, "Index of the linear code layer."),
)


def define_flags(flag_values=flags.FLAGS):
    """Defines FLAGS_TABLE in `flag_values`."""
    comparison.define_flags(FLAGS_TABLE, flag_values)


def _option(flag_values, name):
    """The flag if given, else its QUICK or FULL value (list flags → floats)."""
    value = _cli.flag_or_default(flag_values, name, FULL, QUICK)
    if isinstance(value, list):
        value = [float(item) for item in value]
    return value


def grid_specs(options: Dict, regular_options: Optional[Dict] = None,
               **kfac_options) -> List[ae.OptimizerSpec]:
    """Every configuration of every family, labelled `"<family> lr=… damping=…"`.

    `kfac_options` (e.g. `inv_update_every`, `cov_ema_decay`) go to every K-FAC
    spec; `regular_options` replace them for regular momentum.
    """
    specs = [
        ae.OptimizerSpec("sgd", lr, label="sgd lr=%g" % lr) for lr in options["sgd_lrs"]
    ]
    specs += [
        ae.OptimizerSpec("adam", lr, label="adam lr=%g" % lr)
        for lr in options["adam_lrs"]
    ]
    # Regular K-FAC keeps the identity-initialised covariances: debiased
    # statistics of the first batch alone are rank-deficient, and with a fixed
    # small damping its first steps explode (the qmodel sizes its steps).
    specs += [
        ae.OptimizerSpec(
            "kfac",
            lr,
            damping=damping,
            label="kfac lr=%g damping=%g" % (lr, damping),
            **dict(kfac_options, **(regular_options or {}),
                   warm_start_covariances=False),
        )
        for lr in options["kfac_lrs"]
        for damping in options["kfac_dampings"]
    ]
    specs += [
        ae.OptimizerSpec(
            "kfac_qmodel",
            1.0,
            damping=damping,
            momentum=0.0,
            label="kfac_qmodel damping=%g" % damping,
            **kfac_options,
        )
        for damping in options["qmodel_dampings"]
    ]
    return specs


def best_per_family(runs: Sequence[Dict]) -> Dict[str, Dict]:
    """`{family: the run of that family with the lowest final loss}`."""
    best = {}
    for run in runs:
        family = run["config"]["optimizer"]["kind"]
        if family not in best or comparison.final_loss(run) < comparison.final_loss(
            best[family]
        ):
            best[family] = run
    return best


def grid_edge_warnings(runs: Sequence[Dict], best: Dict[str, Dict]) -> List[str]:
    """Notes for learning-rate grids whose best value is the smallest or largest."""
    warnings = []
    for family in ("sgd", "adam"):
        if family not in best:
            continue
        rates = sorted(
            {
                run["config"]["optimizer"]["learning_rate"]
                for run in runs
                if run["config"]["optimizer"]["kind"] == family
            }
        )
        chosen = best[family]["config"]["optimizer"]["learning_rate"]
        if len(rates) > 1 and chosen in (rates[0], rates[-1]):
            warnings.append(
                "best %s learning rate %g is at the edge of the grid %s"
                % (family, chosen, rates)
            )
    return warnings


def markdown_report(result: Dict) -> str:
    """The report: settings, time-to-target table, configurations, micro-benchmark."""
    options = result["options"]
    lines = [
        "# Deep autoencoder benchmark",
        "",
        "Data: %s; evaluation subset: %d images; batch %d; SGD and Adam %d steps, "
        "K-FAC %d steps; TensorFlow %s on %s CPUs."
        % (
            result["data"],
            result["eval_size"],
            result["settings"]["batch_size"],
            options["steps"],
            options["kfac_steps"],
            result["environment"]["tensorflow"],
            result["environment"]["cpus"],
        ),
        "",
    ]
    if "table" in result:
        lines += [
            "## Steps and seconds to the best SGD configuration's final loss",
            "",
            comparison.format_table(result["table"], result["target"], REFERENCES),
            "",
        ]
        lines += [
            "A ratio X/this above 1 means this optimizer needed fewer steps or "
            "seconds than X.",
            "",
        ]
    lines += ["## Best configuration per optimizer", ""]
    for family, name in result["best"].items():
        lines.append("* %s: `%s`" % (family, name))
    lines += [""] + ["Warning: %s." % warning for warning in result["warnings"]]
    if "micro" in result:
        micro = result["micro"]
        lines += [
            "",
            "## Per-step cost (median of %d runs)" % micro["repeats"],
            "",
            "| op | seconds | ratio to SGD step |",
            "|---|---|---|",
        ]
        for name, seconds in micro["seconds"].items():
            lines.append(
                "| %s | %.4f | %.2f |"
                % (name, seconds, micro["ratio_to_sgd_step"][name])
            )
        lines += [""]
        for family, schedule in micro["schedules"].items():
            lines.append(
                "%s_periodic: covariances every %d steps, inverses every %d steps%s; "
                "mean and largest step over a cycle."
                % (
                    family,
                    schedule["cov_update_every"],
                    schedule["inv_update_every"],
                    " (spread)" if schedule["spread_inverse_updates"] else "",
                )
            )
    lines += [
        "",
        "## All runs",
        "",
        "| run | final loss | steps | seconds |",
        "|---|---|---|---|",
    ]
    for run in result["runs"]:
        loss = comparison.final_loss(run)
        lines.append(
            "| %s | %s | %d | %.1f |"
            % (
                run["name"],
                "diverged" if math.isinf(loss) else "%.4f" % loss,
                run["steps"],
                run["seconds"],
            )
        )
    return "\n".join(lines) + "\n"


def family_settings(options: Dict, settings: ae.TrainSettings, kind: str):
    """`settings` with the run length and evaluation interval of `kind`'s family."""
    if kind.startswith("kfac"):
        steps, every = options["kfac_steps"], options["kfac_eval_every"]
    else:
        steps, every = options["steps"], options["eval_every"]
    return dataclasses.replace(
        settings, max_steps=steps, max_seconds=None, eval_every=every
    )


def run_benchmark(
    options: Dict,
    settings: ae.TrainSettings,
    train_images: np.ndarray,
    eval_images: np.ndarray,
    output_dir: str,
    data: str = "",
    kfac_options: Optional[Dict] = None,
    micro: bool = True,
    regular_options: Optional[Dict] = None,
) -> Dict:
    """Runs the grids and the micro-benchmark; writes and returns the result.

    `kfac_options` and `regular_options` go to the K-FAC specs (see
    `grid_specs`). The JSON file
    is rewritten after every run, so an interrupted benchmark keeps its runs.
    """
    specs = grid_specs(options, regular_options, **(kfac_options or {}))
    print("%d runs: %s" % (len(specs), ", ".join(spec.name for spec in specs)))
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, JSON_FILE)
    result = comparison_training.new_record(
        settings, data, eval_images, options=options
    )
    comparison_training.train_all(
        ae.train_one,
        specs,
        lambda spec: family_settings(options, settings, spec.kind),
        train_images,
        eval_images,
        result,
        json_path,
        comparison.Progress(),
    )
    best = best_per_family(result["runs"])
    result["best"] = {f: r["name"] for f, r in best.items()}
    result["warnings"] = grid_edge_warnings(result["runs"], best)
    family_records = [
        dict(best[family], name=family) for family in FAMILIES if family in best
    ]
    if "sgd" in best and math.isfinite(comparison.final_loss(best["sgd"])):
        result["target"] = comparison.final_loss(best["sgd"])
        result["table"] = comparison.target_table(
            family_records, result["target"], REFERENCES
        )
    kfac_specs = {
        family: ae.OptimizerSpec(**best[family]["config"]["optimizer"])
        for family in ("kfac", "kfac_qmodel")
        if family in best
    }
    if micro and kfac_specs:
        print("Micro-benchmark ...")
        result["micro"] = micro_benchmark(
            kfac_specs, settings, train_images, options["micro_repeats"]
        )
    comparison.write_json(json_path, result)
    with open(os.path.join(output_dir, MARKDOWN_FILE), "w") as markdown_file:
        markdown_file.write(markdown_report(result))
    plot(family_records, os.path.join(output_dir, PLOT_FILE), result.get("target"))
    return result


def plot(records: Sequence[Dict], path: str, target: Optional[float]) -> bool:
    """Loss against steps and against seconds on log axes (K-FAC's runs are
    short, SGD's long), best configuration per optimizer; False without
    matplotlib."""
    return comparison.plot_records(
        records,
        path,
        target,
        title="Deep autoencoder: best configuration per optimizer",
        log_x=True,
        max_loss=300,
    )


def run_from_flags(flag_values=flags.FLAGS) -> Dict:
    """Runs the benchmark the flags describe, prints the report, returns the result."""
    options = {name: _option(flag_values, name) for name in FULL}
    settings = ae.TrainSettings(
        batch_size=flag_values.batch_size,
        seed=flag_values.seed,
        layer_sizes=tuple(int(s) for s in flag_values.layer_sizes),
        code_layer=flag_values.code_layer,
    )
    train_images, eval_images, data = ae.prepare_data(
        flag_values.data_dir,
        flag_values.use_fake_data,
        options["eval_size"],
        settings.batch_size,
        settings.seed,
        fallback_to_fake=flag_values.data_dir is None,
    )
    result = run_benchmark(
        options,
        settings,
        train_images,
        eval_images,
        flag_values.output_dir,
        data=data,
        kfac_options=dict(
            inv_update_every=flag_values.inv_update_every,
            cov_update_every=flag_values.cov_update_every,
            spread_inverse_updates=flag_values.spread_inverse_updates,
            cov_ema_decay=flag_values.cov_ema_decay,
        ),
        # The original's schedule for regular momentum, unless the flags set one.
        regular_options={name: value for name, value in REGULAR_SCHEDULE.items()
                         if not flag_values[name].present},
    )
    print("\n" + markdown_report(result))
    print(
        "Written to %s (%s, %s, %s)."
        % (flag_values.output_dir, JSON_FILE, MARKDOWN_FILE, PLOT_FILE)
    )
    return result


# `app.run` entry point: `run_from_flags` (returns None, the exit status).
main = _cli.record_main(run_from_flags)


if __name__ == "__main__":
    _cli.run(define_flags, main, verbosity=tf.logging.ERROR)
