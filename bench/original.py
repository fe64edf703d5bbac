r"""Benchmark: the classic three-op loop, this library against the original
K-FAC, on the deep autoencoder (issue #14, part 3).

The loop users of the original keep: `sess.run([train_op, cov_update_op])`
every step and `sess.run(inv_update_op)` after every 10th (the original's
examples' idiom), a plain `KfacOptimizer` with the quadratic model and
Levenberg-Marquardt damping, and with regular momentum; covariances from
the identity, decay 0.95. The same code builds the model, registers it and
runs the loop for both libraries: only the `kfac` module differs. Each run
is a separate process (both libraries are called `kfac`), one after
another: SGD with momentum first (lr 2e-3, the target is its best loss in
its time), then for each momentum type the original and this library.
Every run starts from the same weights and sees the same batches; the loss
on 2,000 training images is evaluated every 10 steps, off the clock.

Per run: steps and seconds to the target and, on one fixed batch after the
run, the median seconds of the train op, of train + covariance ops and of
the inverse op. With `--profile`, also where a step (train + covariances)
spends its time (`bench.step_profile`): the share of op time in matrix
products, their multiply-adds per step and the rate they run at.

The original is not part of this repository. `--original_dir` is a folder
holding its `kfac` package, e.g. the last release of its TF1 era:

  python -m pip download --no-deps kfac==0.1.0 -d /tmp/orig
  unzip -q /tmp/orig/kfac-0.1.0-py2.py3-none-any.whl -d /tmp/kfac-original
  python -m bench.original --original_dir=/tmp/kfac-original --quick

It runs under `import tensorflow.compat.v1 as tf` aliasing (`tensorflow`
is the `compat.v1` module while it is imported and used; the one contrib
module it imports when loaded, `tensorflow.contrib.tpu.python.tpu.tpu_function`,
is TensorFlow's own `tensorflow.python.tpu.tpu_function`) with
`disable_v2_behavior()`, for both libraries alike.

Writes `<output_dir>/original.json` and `original.md`.
"""

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from typing import Dict
from typing import List

import numpy as np
import tensorflow.compat.v1 as tf
from absl import app
from absl import flags
from tensorflow.python.tpu import tpu_function

from bench import autoencoder_micro
from bench import step_profile
from kfac.examples import autoencoder_mnist as ae
from kfac.examples import comparison

OUTPUT_DIR = os.path.join("bench", "results")
BATCH_SIZE = 512
INVERSE_PERIOD = 10
EVAL_EVERY = 10
EVAL_SIZE = 2000
SEED = 0
SGD_LR = 2e-3
# learning rate, damping, momentum, momentum type: the autoencoder example's
# quadratic model and the original's regular-momentum settings for this task.
KFAC_SETTINGS = {
    "qmodel": dict(learning_rate=1.0, damping=0.03, momentum=0.0,
                   momentum_type="qmodel"),
    "regular": dict(learning_rate=0.01, damping=0.03, momentum=0.9,
                    momentum_type="regular"),
}
LIBRARIES = ("original", "ours")
TIMING_REPEATS = 20
CONTRIB_PACKAGES = ("tensorflow.contrib", "tensorflow.contrib.tpu",
                    "tensorflow.contrib.tpu.python",
                    "tensorflow.contrib.tpu.python.tpu")

FLAGS_TABLE = (
    ("string", "original_dir", None, "Folder holding the original's kfac package."),
    ("string", "data_dir", None, "MNIST-format folder (default: Fashion-MNIST)."),
    ("bool", "use_fake_data", False, "Train on generated images instead."),
    ("bool", "quick", False, "SGD for 60 s and K-FAC for at most 90 s (else 150/300)."),
    ("list", "momentum_types", ["qmodel", "regular"], "Which K-FAC settings to run."),
    ("bool", "profile", False, "Also trace a step: op time and arithmetic of its "
     "matrix products."),
    ("string", "output_dir", OUTPUT_DIR, "Where the JSON and markdown go."),
    # Internal: one run, in its own process.
    ("string", "child", None, "Internal: run '<library>:<optimizer>' and exit."),
    ("string", "child_output", None, "Internal: where the child writes its record."),
    ("float", "target", None, "Internal: stop once the evaluated loss reaches this."),
    ("float", "max_seconds", None, "Internal: the child's time budget."),
    ("integer", "timing_repeats", TIMING_REPEATS, "Timed calls per op."),
)


def import_original(original_dir: str):
    """The original's `kfac` package from `original_dir`, in place of ours.

    This library's modules already imported keep working (they hold their
    own references); `tensorflow` names `tensorflow.compat.v1` from here on,
    as the original expects of TF1.
    """
    if not os.path.isdir(os.path.join(original_dir, "kfac")):
        raise SystemExit("--original_dir: no kfac package in {!r} (see this module's "
                         "docstring for how to get the original).".format(original_dir))
    for name in [name for name in sys.modules if name.split(".")[0] == "kfac"]:
        del sys.modules[name]
    sys.modules["tensorflow"] = tf
    # The one `tf.contrib` module it imports when loaded, under its contrib name.
    parent = None
    for name in CONTRIB_PACKAGES:
        module = sys.modules[name] = types.ModuleType(name)
        if parent is not None:
            setattr(parent, name.rsplit(".", 1)[1], module)
        parent = module
    parent.tpu_function = sys.modules[CONTRIB_PACKAGES[-1] + ".tpu_function"] = (
        tpu_function)
    sys.path.insert(0, os.path.abspath(original_dir))
    module = importlib.import_module("kfac")
    if not module.__file__.startswith(os.path.abspath(original_dir)):
        raise SystemExit(
            "--original_dir: kfac was imported from {}".format(module.__file__))
    return module


def build(kfac_module, optimizer: str, weights):
    """The graph of one run: `(fetches, placeholders)`.

    `fetches` has `train`, `cov`, `inv` (None for SGD) and `loss_on`, the
    loss of the evaluation placeholder; `placeholders` `inputs`,
    `prev_inputs` (the quadratic model's previous batch) and `eval_inputs`.
    """
    tf.set_random_seed(SEED)
    inputs = tf.placeholder(tf.float32, [BATCH_SIZE, weights[0][0].shape[0]])
    prev_inputs = tf.placeholder(tf.float32, inputs.shape)
    eval_inputs = tf.placeholder(tf.float32, [None, inputs.shape[1]])
    collection = None if optimizer == "sgd" else kfac_module.LayerCollection()
    model = ae.build_autoencoder(inputs, weights, layer_collection=collection,
                                 seed=SEED)
    global_step = tf.train.get_or_create_global_step()
    fetches = {"loss_on": model.loss_fn(eval_inputs), "cov": None, "inv": None}
    if optimizer == "sgd":
        sgd = tf.train.MomentumOptimizer(SGD_LR, 0.9)
        fetches["train"] = sgd.minimize(model.loss, global_step=global_step)
    else:
        kfac_optimizer = kfac_module.KfacOptimizer(
            cov_ema_decay=0.95, layer_collection=collection, batch_size=BATCH_SIZE,
            **KFAC_SETTINGS[optimizer])
        if optimizer == "qmodel":
            kfac_optimizer.set_damping_adaptation_params(
                is_chief=True, prev_train_batch=prev_inputs, loss_fn=model.loss_fn,
                damping_adaptation_decay=0.95, damping_adaptation_interval=5)
        fetches["train"] = kfac_optimizer.minimize(model.loss, global_step=global_step)
        fetches["cov"] = kfac_optimizer.cov_update_op
        fetches["inv"] = kfac_optimizer.inv_update_op
    placeholders = {"inputs": inputs, "prev_inputs": prev_inputs,
                    "eval_inputs": eval_inputs}
    return fetches, placeholders


def median_seconds(run, repeats: int = TIMING_REPEATS) -> float:
    """Median wall-clock seconds of `run()` over `repeats` calls, after one."""
    run()
    return autoencoder_micro.median_seconds(run, repeats)


def run_loop(sess, fetches, placeholders, train_images, eval_images,
             target, max_seconds, repeats: int = TIMING_REPEATS,
             profile: bool = False) -> Dict:
    """The classic loop until the evaluated loss reaches `target` or the time
    is up; then the per-op timings (and with `profile` the traced step's
    `step_profile.profile_step`). Returns the run's record."""
    batches = comparison.minibatch_indices(len(train_images), BATCH_SIZE, SEED + 1)
    train = [fetches["train"]] + ([fetches["cov"]] if fetches["cov"] is not None
                                  else [])

    def evaluate():
        return comparison.evaluate_loss(
            lambda batch: sess.run(fetches["loss_on"],
                                   {placeholders["eval_inputs"]: batch}), eval_images)

    evals, seconds, step = [], 0.0, 0
    batch = prev = train_images[next(batches)]
    while True:
        if step % EVAL_EVERY == 0:
            loss = evaluate()
            evals.append({"step": step, "seconds": seconds,
                          "loss": loss if np.isfinite(loss) else None})
            done = target is not None and loss <= target
            if done or not np.isfinite(loss) or seconds >= max_seconds:
                break
        start = time.perf_counter()
        # (The original's inverse op reads the quadratic model's previous
        # batch: its damping is computed there.)
        feed = {placeholders["inputs"]: batch, placeholders["prev_inputs"]: prev}
        sess.run(train, feed)
        if fetches["inv"] is not None and step % INVERSE_PERIOD == 0:
            sess.run(fetches["inv"], feed)
        seconds += time.perf_counter() - start
        step += 1
        prev, batch = batch, train_images[next(batches)]
    feed = {placeholders["inputs"]: batch, placeholders["prev_inputs"]: prev}
    timings = {"train": median_seconds(lambda: sess.run(fetches["train"], feed),
                                       repeats)}
    if fetches["cov"] is not None:
        timings["train_and_cov"] = median_seconds(lambda: sess.run(train, feed),
                                                  repeats)
        timings["inv"] = median_seconds(lambda: sess.run(fetches["inv"], feed),
                                        repeats)
    last = evals[-1]["loss"]
    record = {"evals": evals, "steps": step, "seconds": seconds, "final_loss": last,
              "diverged": last is None, "timings": timings}
    if profile:
        record["profile"] = step_profile.profile_step(sess, train, feed)
    return record


def child_main(options) -> None:
    """One run in this process; its record goes to `--child_output`."""
    library, optimizer = options.child.split(":")
    train_images, eval_images, source = ae.prepare_data(
        options.data_dir, options.use_fake_data, EVAL_SIZE, BATCH_SIZE, SEED,
        fallback_to_fake=True)
    weights = ae.initial_weights(train_images.shape[1])
    tf.disable_v2_behavior()
    kfac_module = (import_original(options.original_dir) if library == "original"
                   else importlib.import_module("kfac"))
    with tf.Graph().as_default():
        fetches, placeholders = build(kfac_module, optimizer, weights)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            record = run_loop(sess, fetches, placeholders, train_images, eval_images,
                              options.target, options.max_seconds,
                              options.timing_repeats, options.profile)
    record.update(library=library, optimizer=optimizer, data=source,
                  kfac_file=kfac_module.__file__,
                  tensorflow_module=sys.modules["tensorflow"].__name__)
    with open(options.child_output, "w") as handle:
        json.dump(record, handle)


def run_child(library: str, optimizer: str, options, target, max_seconds) -> Dict:
    """Runs `child_main` in a new Python process and returns its record."""
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "record.json")
        command = [sys.executable, "-m", "bench.original",
                   "--child={}:{}".format(library, optimizer),
                   "--child_output=" + output, "--max_seconds={}".format(max_seconds),
                   "--use_fake_data={}".format(options.use_fake_data),
                   "--timing_repeats={}".format(options.timing_repeats),
                   "--profile={}".format(options.profile)]
        for name in ("original_dir", "data_dir"):
            if getattr(options, name):
                command.append("--{}={}".format(name, getattr(options, name)))
        if target is not None:
            command.append("--target={!r}".format(target))
        subprocess.run(command, check=True)
        with open(output) as handle:
            record = json.load(handle)
    record["name"] = "sgd" if optimizer == "sgd" else "{} {}".format(library, optimizer)
    return record


def speedups(runs: List[Dict]) -> List[Dict]:
    """Per momentum type: the original's over this library's seconds to the
    target and per-op seconds (above 1: this library is faster)."""
    by_name = {run["name"]: run for run in runs}
    rows = []
    for optimizer in KFAC_SETTINGS:
        original = by_name.get("original " + optimizer)
        ours = by_name.get("ours " + optimizer)
        if original is None or ours is None:
            continue
        row = {"optimizer": optimizer}
        for op in ("train", "train_and_cov", "inv"):
            row[op] = original["timings"][op] / ours["timings"][op]
        reached = [run.get("to_target") for run in (original, ours)]
        row["seconds_to_target"] = (reached[0]["seconds"] / reached[1]["seconds"]
                                    if all(reached) and reached[1]["seconds"] > 0
                                    else None)
        rows.append(row)
    return rows


def format_report(record: Dict) -> str:
    """The markdown of a comparison record."""
    lines = ["# The classic loop: this library against the original, autoencoder",
             "", "Target: SGD lr {:g}'s best loss, {:.2f}".format(SGD_LR,
                                                                  record["target"]),
             "", "| run | steps to target | seconds to target | final loss | "
             "ms train | ms train+cov | ms inverses |", "|---|---|---|---|---|---|---|"]

    def show(value, spec):
        return "—" if value is None else format(value, spec)

    for run in record["runs"]:
        reached = run.get("to_target") or {}
        timings = run["timings"]
        lines.append("| {} | {} | {} | {} | {} | {} | {} |".format(
            run["name"], show(reached.get("step"), "d"),
            show(reached.get("seconds"), ".1f"), show(run["final_loss"], ".2f"),
            *(show(timings[op] * 1e3 if op in timings else None, ".1f")
              for op in ("train", "train_and_cov", "inv"))))
    lines += ["", "| original / ours | train | train+cov | inverses "
              "| seconds to target |", "|---|---|---|---|---|"]
    for row in record["speedups"]:
        lines.append("| {} | {:.2f} | {:.2f} | {:.2f} | {} |".format(
            row["optimizer"], row["train"], row["train_and_cov"], row["inv"],
            show(row["seconds_to_target"], ".2f")))
    profiled = [run for run in record["runs"] if "profile" in run]
    if profiled:
        lines += ["", "| traced step (train + covariances) | ms | op ms | matrix "
                  "products' share of op time | G multiply-adds | GFLOP/s |",
                  "|---|---|---|---|---|---|"]
        for run in profiled:
            profile = run["profile"]
            rates = step_profile.rates(profile)
            lines.append("| {} | {:.1f} | {:.1f} | {:.0%} | {:.2f} | {:.0f} |".format(
                run["name"], 1e3 * profile["wall_seconds"],
                1e3 * profile["op_seconds"], rates["matmul_share"],
                1e-9 * profile["multiply_adds"], rates["gflops"]))
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    options = flags.FLAGS
    if options.child:
        child_main(options)
        return
    if not options.original_dir:
        raise SystemExit("--original_dir is required (see the module docstring).")
    sgd_seconds, kfac_seconds = (60.0, 90.0) if options.quick else (150.0, 300.0)
    sgd = run_child("ours", "sgd", options, None, sgd_seconds)
    target = comparison.best_loss(sgd)
    runs = [sgd]
    for optimizer in options.momentum_types:
        for library in LIBRARIES:
            runs.append(run_child(library, optimizer, options, target, kfac_seconds))
    for run in runs:
        reached = comparison.time_to_target(run, target)
        run["to_target"] = (dict(step=reached[0], seconds=reached[1])
                            if reached else None)
    record = dict(target=target, runs=runs, speedups=speedups(runs),
                  environment=comparison.environment())
    os.makedirs(options.output_dir, exist_ok=True)
    comparison.write_json(os.path.join(options.output_dir, "original.json"), record)
    text = format_report(record)
    with open(os.path.join(options.output_dir, "original.md"), "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    comparison.define_flags(FLAGS_TABLE)
    app.run(main)
