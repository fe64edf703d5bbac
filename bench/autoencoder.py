r"""Benchmark: K-FAC against tuned SGD and Adam on the deep autoencoder.

Trains the autoencoder of `kfac.examples.autoencoder_mnist` (the K-FAC
paper's MNIST autoencoder; here on Fashion-MNIST) with

* SGD with momentum 0.9 over a learning-rate grid,
* Adam over a learning-rate grid,
* K-FAC with regular momentum 0.9 and fixed damping (grid over learning rate
  and damping),
* K-FAC with `momentum_type="qmodel"` and Levenberg-Marquardt damping
  adaptation (grid over the initial damping),

all from the same weights on the same mini-batches in the same order, each
run for the same number of steps (or seconds). The loss is evaluated on a
fixed subset of the training images (10,000 by default). Per optimizer the
best configuration is the one with the lowest final loss; the target is the
final loss of the best SGD configuration. The report gives, per optimizer,
the final loss and the steps and seconds to reach the target, and the ratios
SGD/K-FAC and Adam/K-FAC. A micro-benchmark in the same run measures the
median seconds of an SGD step, a K-FAC training step, a covariance update
and a full inverse update.

Writes `<output_dir>/autoencoder.json`, `autoencoder.md` and (with
matplotlib) `autoencoder.png`.

Run:
  python -m bench.autoencoder --quick        # <= 5 minutes on 2 CPU cores
  python -m bench.autoencoder                # the full benchmark (hours)
"""

import functools
import math
import os
import statistics
import time
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

import numpy as np
import tensorflow.compat.v1 as tf
from absl import app
from absl import flags

from kfac.examples import autoencoder_mnist as ae
from kfac.examples import comparison

OUTPUT_DIR = os.path.join("bench", "results")
JSON_FILE = "autoencoder.json"
MARKDOWN_FILE = "autoencoder.md"
PLOT_FILE = "autoencoder.png"
FAMILIES = ("sgd", "adam", "kfac", "kfac_qmodel")
REFERENCES = ("sgd", "adam")

# The full run: 15 training minutes per configuration; the grids reach 10x
# each way of the best values found on Fashion-MNIST with batch 512 (SGD 2e-3,
# Adam 1e-3, K-FAC learning rate 0.03 with damping 1, qmodel damping 10).
FULL = dict(
    max_steps=None,
    max_seconds=900.0,
    eval_every=50,
    eval_size=10000,
    sgd_lrs=[2e-4, 6e-4, 2e-3, 6e-3, 2e-2],
    adam_lrs=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
    kfac_lrs=[0.01, 0.03, 0.1],
    kfac_dampings=[0.3, 1.0, 3.0],
    qmodel_dampings=[1.0, 10.0, 100.0],
    micro_repeats=20,
)
# --quick: the same kinds of runs, short and with small grids.
QUICK = dict(
    max_steps=None,
    max_seconds=20.0,
    eval_every=10,
    eval_size=2000,
    sgd_lrs=[6e-4, 2e-3, 6e-3, 2e-2],
    adam_lrs=[3e-4, 1e-3, 3e-3],
    kfac_lrs=[0.03],
    kfac_dampings=[1.0],
    qmodel_dampings=[10.0],
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
    ("integer", "max_steps", None, "Steps per run."),
    ("float", "max_seconds", None, "Training seconds per run (full: no limit)."),
    ("integer", "eval_every", None, "Evaluate every this many steps."),
    ("integer", "eval_size", None, "Images in the fixed evaluation subset."),
    ("list", "sgd_lrs", None, "SGD learning-rate grid."),
    ("list", "adam_lrs", None, "Adam learning-rate grid."),
    ("list", "kfac_lrs", None, "K-FAC (regular momentum) learning-rate grid."),
    ("list", "kfac_dampings", None, "K-FAC (regular momentum) damping grid."),
    ("list", "qmodel_dampings", None, "K-FAC qmodel initial-damping grid."),
    ("integer", "inv_update_every", 10, "K-FAC inverse update interval."),
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
    value = flag_values[name].value
    if value is None:
        value = (QUICK if flag_values.quick else FULL)[name]
    if isinstance(value, list):
        value = [float(item) for item in value]
    return value


def grid_specs(options: Dict, **kfac_options) -> List[ae.OptimizerSpec]:
    """Every configuration of every family, labelled `"<family> lr=… damping=…"`.

    `kfac_options` (e.g. `inv_update_every`, `cov_ema_decay`) go to every K-FAC spec.
    """
    specs = [
        ae.OptimizerSpec("sgd", lr, label="sgd lr=%g" % lr) for lr in options["sgd_lrs"]
    ]
    specs += [
        ae.OptimizerSpec("adam", lr, label="adam lr=%g" % lr)
        for lr in options["adam_lrs"]
    ]
    specs += [
        ae.OptimizerSpec(
            "kfac",
            lr,
            damping=damping,
            label="kfac lr=%g damping=%g" % (lr, damping),
            **kfac_options,
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


def _median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def micro_benchmark(
    kfac_spec: ae.OptimizerSpec,
    settings: ae.TrainSettings,
    images: np.ndarray,
    repeats: int,
) -> Dict:
    """Median seconds of single ops, and their ratios to the SGD step.

    Timed: an SGD (momentum) step; a K-FAC training step alone (precondition
    and apply), the K-FAC step as the training loop runs it (training step and
    covariance update in one run), a covariance update alone, and one full
    inverse update. Each after two warm-up runs; batches are fixed.
    """
    batch = images[: settings.batch_size]
    timings = {}
    for spec in (ae.OptimizerSpec("sgd", 1e-4), kfac_spec):
        ops = ae.build_training_graph(spec, settings, images.shape[1])
        feeds = [ops.model.inputs, ops.prev_inputs]
        with ops.graph.as_default(), tf.Session(graph=ops.graph) as sess:
            sess.run(tf.global_variables_initializer())
            callables = (
                {"sgd_step": ops.train_op}
                if spec.kind == "sgd"
                else {
                    "kfac_train_step": ops.train_op,
                    "kfac_train_and_cov_step": [ops.train_op, ops.cov_update_op],
                    "cov_update": ops.cov_update_op,
                    "inv_update": ops.inv_update_op,
                }
            )
            for name, fetch in callables.items():
                run_op = functools.partial(
                    sess.make_callable(fetch, feeds), batch, batch
                )
                for _ in range(2):
                    run_op()
                timings[name] = _median_seconds(run_op, repeats)
    timings["kfac_amortized_step"] = (
        timings["kfac_train_and_cov_step"]
        + timings["inv_update"] / kfac_spec.inv_update_every
    )
    ratios = {name: seconds / timings["sgd_step"] for name, seconds in timings.items()}
    return {
        "seconds": timings,
        "ratio_to_sgd_step": ratios,
        "repeats": repeats,
        "inv_update_every": kfac_spec.inv_update_every,
    }


def markdown_report(result: Dict) -> str:
    """The report: settings, time-to-target table, configurations, micro-benchmark."""
    settings = result["settings"]
    limits = [
        "%s %s" % (settings[key], unit)
        for key, unit in (("max_steps", "steps"), ("max_seconds", "training seconds"))
        if settings[key] is not None
    ]
    lines = [
        "# Deep autoencoder benchmark",
        "",
        "Data: %s; evaluation subset: %d images; batch %d; runs of at most %s; "
        "TensorFlow %s on %s CPUs."
        % (
            result["data"],
            result["eval_size"],
            settings["batch_size"],
            " and ".join(limits) or "unlimited length",
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
        lines += [
            "",
            "kfac_amortized_step = kfac_train_and_cov_step + inv_update / %d."
            % micro["inv_update_every"],
        ]
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


def run_benchmark(
    options: Dict,
    settings: ae.TrainSettings,
    train_images: np.ndarray,
    eval_images: np.ndarray,
    output_dir: str,
    data: str = "",
    kfac_options: Optional[Dict] = None,
    micro: bool = True,
) -> Dict:
    """Runs the grids and the micro-benchmark; writes and returns the result.

    `kfac_options` go to every K-FAC spec (see `grid_specs`).
    """
    specs = grid_specs(options, **(kfac_options or {}))
    print("%d runs: %s" % (len(specs), ", ".join(spec.name for spec in specs)))
    json_path = os.path.join(output_dir, JSON_FILE)
    grid = ae.compare(
        specs,
        settings,
        train_images,
        eval_images,
        json_path,
        data=data,
        progress=comparison.Progress(),
    )
    best = best_per_family(grid["runs"])
    result = dict(
        grid,
        options=options,
        best={f: r["name"] for f, r in best.items()},
        warnings=grid_edge_warnings(grid["runs"], best),
    )
    result.pop("target", None)
    result.pop("table", None)
    family_records = [
        dict(best[family], name=family) for family in FAMILIES if family in best
    ]
    if "sgd" in best and math.isfinite(comparison.final_loss(best["sgd"])):
        result["target"] = comparison.final_loss(best["sgd"])
        result["table"] = comparison.target_table(
            family_records, result["target"], REFERENCES
        )
    if micro and "kfac" in best:
        print("Micro-benchmark ...")
        kfac_spec = ae.OptimizerSpec(**best["kfac"]["config"]["optimizer"])
        result["micro"] = micro_benchmark(
            kfac_spec, settings, train_images, options["micro_repeats"]
        )
    comparison.write_json(json_path, result)
    with open(os.path.join(output_dir, MARKDOWN_FILE), "w") as markdown_file:
        markdown_file.write(markdown_report(result))
    comparison.plot_records(
        family_records,
        os.path.join(output_dir, PLOT_FILE),
        result.get("target"),
        title="Deep autoencoder: best configuration per optimizer",
    )
    return result


def run_from_flags(flag_values=flags.FLAGS) -> Dict:
    """Runs the benchmark the flags describe, prints the report, returns the result."""
    options = {name: _option(flag_values, name) for name in FULL}
    settings = ae.TrainSettings(
        batch_size=flag_values.batch_size,
        max_steps=options["max_steps"],
        max_seconds=options["max_seconds"],
        eval_every=options["eval_every"],
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
            cov_ema_decay=flag_values.cov_ema_decay,
        ),
    )
    print("\n" + markdown_report(result))
    print(
        "Written to %s (%s, %s, %s)."
        % (flag_values.output_dir, JSON_FILE, MARKDOWN_FILE, PLOT_FILE)
    )
    return result


def main(argv, flag_values=flags.FLAGS):
    """`app.run` entry point: `run_from_flags` (returns None, the exit status)."""
    del argv  # Unused.
    run_from_flags(flag_values)


if __name__ == "__main__":
    tf.logging.set_verbosity(tf.logging.ERROR)
    define_flags()
    app.run(main)
