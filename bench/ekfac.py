r"""Benchmark: EKFAC against K-FAC, and inverses by drift against fixed
periods, on the deep autoencoder (issue #16).

Every run starts from the same weights and sees the same mini-batches in the
same order (`kfac.examples.autoencoder_mnist`, Fashion-MNIST, batch 512).
SGD with momentum (the reference, its best learning rate of `bench.autoencoder`)
sets the target: its best loss within the time budget. K-FAC and EKFAC
(`approx="ekfac"` for every layer, the collection's default) run the same
optimizer settings, quadratic model with Levenberg-Marquardt damping and with
regular momentum, at equal inverse periods; EKFAC also with a 5x longer
eigenbasis period. The table gives steps and seconds to the target and the
ratios against SGD; every configuration run is listed.

`--drift`: instead, K-FAC (qmodel) with inverses every 5, 10 and 20 steps
against `invert_every="adaptive"` with `max_drift` 0.05, 0.1 and 0.2 (at
least every 50 steps); the table adds the inverse updates computed in all.

Writes `<output_dir>/ekfac.json` and `ekfac.md` (`drift.json`, `drift.md`).

Run:
  python -m bench.ekfac --quick     # about 12 minutes on 2 CPU cores
  python -m bench.ekfac --quick --drift
  python -m bench.ekfac --quick --regular_dampings=0.03,0.1,0.3,1
  python -m bench.ekfac             # 150 s per run
"""

import os

from absl import app
from absl import flags

from kfac.examples import _health_plot as health_plot
from kfac.examples import autoencoder_mnist as ae
from kfac.examples import comparison

OUTPUT_DIR = os.path.join("bench", "results")
INVERSE_PERIOD = 10
LONG_PERIOD = 5 * INVERSE_PERIOD
NUM_FACTORS = 16  # two per layer of the 8-layer autoencoder

FLAGS_TABLE = (
    ("string", "data_dir", None, "MNIST-format folder (default: Fashion-MNIST)."),
    ("bool", "use_fake_data", False, "Train on generated images instead."),
    ("bool", "quick", False, "60 s per run instead of 150 s."),
    ("string", "output_dir", OUTPUT_DIR, "Where the JSON and markdown go."),
    ("bool", "drift", False, "Fixed inverse periods against the drift schedule."),
    ("list", "regular_dampings", None,
     "Instead: EKFAC with regular momentum at these dampings (and K-FAC at the "
     "first), inverses every 10 steps."),
)
QMODEL = dict(learning_rate=1.0, damping=0.03, momentum=0.0)


def drift_specs():
    """SGD, then fixed inverse periods, then drift thresholds (qmodel K-FAC)."""
    runs = [ae.OptimizerSpec("sgd", 2e-3, label="sgd")]
    for period in (5, 10, 20):
        runs.append(ae.OptimizerSpec(
            "kfac_qmodel", inv_update_every=period, cov_ema_decay=0.95,
            label="kfac_qmodel inv={}".format(period), **QMODEL))
    for max_drift in (0.05, 0.1, 0.2):
        runs.append(ae.OptimizerSpec(
            "kfac_qmodel", inv_update_every=LONG_PERIOD, cov_ema_decay=0.95,
            max_drift=max_drift, label="kfac_qmodel drift={}".format(max_drift),
            **QMODEL))
    return runs


def inverse_updates(run):
    """Inverse updates computed in a run: counted by the drift schedule, else
    from the fixed period (every factor every `inv_update_every` steps)."""
    health = run.get("health") or []
    if health and health[-1].get(health_plot.INVERSE_UPDATES) is not None:
        return int(health[-1][health_plot.INVERSE_UPDATES])
    config = run["config"]["optimizer"]
    if not config["kind"].startswith("kfac"):
        return None
    num_factors = NUM_FACTORS
    return num_factors * (1 + (run["steps"] - 1) // config["inv_update_every"])


def damping_specs(dampings):
    """SGD, K-FAC with regular momentum at `dampings[0]`, then EKFAC with
    regular momentum at each damping (the original's other settings)."""
    runs = [ae.OptimizerSpec("sgd", 2e-3, label="sgd")]
    for approximation, values in (("kron", dampings[:1]), ("ekfac", dampings)):
        for damping in values:
            runs.append(ae.OptimizerSpec(
                "kfac", learning_rate=0.01, damping=damping, momentum=0.9,
                warm_start_covariances=False, inv_update_every=INVERSE_PERIOD,
                cov_update_every=1, cov_ema_decay=0.95,
                approximation=None if approximation == "kron" else approximation,
                label="kfac {} damping={:g}".format(approximation, damping)))
    return runs


def specs():
    """SGD (the reference), then K-FAC and EKFAC pairs of equal settings."""
    runs = [ae.OptimizerSpec("sgd", 2e-3, label="sgd")]
    # The autoencoder example's qmodel settings, and the original's regular
    # momentum settings (covariances from the identity, as there).
    families = (
        ("kfac_qmodel", dict(learning_rate=1.0, damping=0.03, momentum=0.0)),
        ("kfac", dict(learning_rate=0.01, damping=0.03, momentum=0.9,
                      warm_start_covariances=False)),
    )
    for kind, optimizer in families:
        variants = (
            ("kron", INVERSE_PERIOD),
            ("ekfac", INVERSE_PERIOD),
            ("ekfac", LONG_PERIOD),
        )
        for approximation, period in variants:
            label = "{} {} inv={}".format(kind, approximation, period)
            runs.append(ae.OptimizerSpec(
                kind, inv_update_every=period, cov_update_every=1,
                cov_ema_decay=0.95,
                approximation=None if approximation == "kron" else approximation,
                label=label, **optimizer))
    return runs


def main(argv):
    del argv
    options = flags.FLAGS
    seconds = 60.0 if options.quick else 150.0
    settings = ae.TrainSettings(batch_size=512, max_steps=None, max_seconds=seconds,
                                eval_every=10)
    train_images, eval_images, source = ae.prepare_data(
        options.data_dir, options.use_fake_data, 2000, settings.batch_size,
        settings.seed, fallback_to_fake=True)
    os.makedirs(options.output_dir, exist_ok=True)
    if options.regular_dampings:
        name = "ekfac_damping"
        runs = damping_specs([float(value) for value in options.regular_dampings])
    elif options.drift:
        name, runs = "drift", drift_specs()
    else:
        name, runs = "ekfac", specs()
    record = ae.compare(runs, settings,
                        train_images, eval_images,
                        os.path.join(options.output_dir, name + ".json"), data=source)
    if "target" not in record:
        raise SystemExit("The SGD reference run has no finite loss: no target.")
    table = comparison.format_table(record["table"], record["target"])
    counts = ["{}: {} steps, {} inverse updates".format(
        run["name"], run["steps"], inverse_updates(run))
        for run in record["runs"] if inverse_updates(run) is not None]
    title = {"drift": "Inverses by drift", "ekfac": "EKFAC vs K-FAC",
             "ekfac_damping": "EKFAC (regular momentum) by damping"}[name]
    text = "# {}, autoencoder, {} s per run ({})\n\n{}\n\n{}\n".format(
        title, seconds, source, table, "\n".join("* " + line for line in counts))
    with open(os.path.join(options.output_dir, name + ".md"), "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    comparison.define_flags(FLAGS_TABLE)
    app.run(main)
