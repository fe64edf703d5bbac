r"""Benchmark: K-FAC against SGD with momentum and Adam on a convnet.

The model is the convnet example's (`kfac.examples.convnet`): conv 5x5x16 -
ReLU - max-pool 3/2 - conv 5x5x16 - ReLU - max-pool 3/2 - linear 10, softmax
cross-entropy, on Fashion-MNIST (generated data with `--use_fake_data` or when
the folder is missing). Its two convolutions are registered with
`register_conv2d` and the linear layer with `register_fully_connected`.

Every run starts from the same weights (Glorot-uniform kernels from numpy,
zero biases) and sees the same mini-batches in the same order; the clock
counts training only, every op an optimizer needs included (K-FAC's
covariance and inverse updates too). The loss is evaluated on a fixed subset
of the training images every `eval_every` steps; the target is the best loss
the reference SGD run reached; the table gives the steps and seconds each run
needed to reach it. After training, off the clock, each run's test loss and
accuracy on the test split are recorded.

The comparison harness (`kfac.examples.comparison_training`) feeds one
placeholder; here each row of it is an image's 784 pixels followed by its
label (`pack`), which the graph splits again.

Run:
  python -m bench.convnet --quick              # SGD, Adam grids, K-FAC; 45 s per run
  python -m bench.convnet --quick --ekfac      # EKFAC against K-FAC (issue #16)
  python -m bench.convnet --quick --reduce     # KFAC-reduce against KFC (#14, #17)
  python -m bench.convnet --quick --amortized  # covariances every 5/10 steps (#14)
  python -m bench.convnet --quick --schedule   # a halving learning rate (#14)
  python -m bench.convnet --architecture=residual --tune --max_seconds=60
                                     # K-FAC's settings, one change each (#14)
  python -m bench.convnet --architecture=residual --combine --max_seconds=60
                                     # the changes that helped, combined (#14)
  python -m bench.convnet --architecture=residual --budgets=30,60
                                     # the residual convnet's grid (#14)
  python -m bench.convnet --best --annealed --batch_size=256 --budgets=60,180
                                     # the best runs, learning rates halved
                                     # in the second half of the budget (#14)
  python -m bench.convnet --tuned_kfac --annealed --batch_size=256
                                     # the same for the SGD and Adam grids
  python -m bench.convnet --best --annealed --weight_decays=0,3e-5,1e-4,3e-4 \
      --batch_size=256 --budgets=60,180  # the best runs with weight decay
  python -m bench.convnet --large_batch --batch_size=256 --max_seconds=60 \
      --budgets=30,60                    # K-FAC also at 2x and 4x the batch
"""

import dataclasses
import math
import os
from typing import Dict
from typing import Optional
from typing import Sequence

import numpy as np
import tensorflow.compat.v1 as tf
from absl import app
from absl import flags

from bench import convnet_specs
from bench import residual
from kfac.examples import _cli
from kfac.examples import comparison
from kfac.examples import comparison_training
from kfac.examples import mnist
from kfac.examples.comparison_training import OptimizerSpec
from kfac.examples.comparison_training import TrainingGraph

OUTPUT_DIR = os.path.join("bench", "results")
IMAGE_PIXELS = mnist.IMAGE_SIZE * mnist.IMAGE_SIZE
NUM_LABELS = mnist.NUM_CLASSES
# (kernel size, output channels) of the two convolutions, as in the example.
CONV_LAYERS = ((5, 16), (5, 16))
POOL_SIZE, POOL_STRIDE = 3, 2
# The plot's y axis ends a little above the initial loss (log 10 = 2.30).
PLOT_MAX_LOSS = 3.0


@dataclasses.dataclass(frozen=True)
class ConvnetSettings:
    """What every run of one comparison shares."""

    batch_size: int = 128
    max_steps: Optional[int] = None
    max_seconds: Optional[float] = 45.0
    eval_every: int = 20
    seed: int = 0
    architecture: str = "convnet"
    # Seconds of training after which test loss and accuracy are recorded.
    budgets: tuple = ()


# ---------------------------------------------------------------- data


def pack(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float32 `[N, 785]`: each image's pixels, then its label."""
    flat = images.reshape([len(images), IMAGE_PIXELS]).astype(np.float32)
    return np.concatenate([flat, labels.astype(np.float32)[:, None]], axis=1)


def unpack(packed: tf.Tensor):
    """`(images [B, 28, 28, 1], int64 labels [B])` of a packed batch."""
    images = tf.reshape(
        packed[:, :IMAGE_PIXELS], [-1, mnist.IMAGE_SIZE, mnist.IMAGE_SIZE, 1]
    )
    labels = tf.cast(tf.round(packed[:, IMAGE_PIXELS]), tf.int64)
    return images, labels


def load_data(data_dir: Optional[str], use_fake_data: bool, eval_size: int, seed: int):
    """`(train, eval, test, description)`, all packed (`pack`).

    `eval` is a fixed subset of the training rows (the target's loss); `test`
    the test split (generated data: a separate generated set).
    """
    folder = data_dir or mnist.DEFAULT_DATA_DIR
    if not use_fake_data and not os.path.isdir(folder):
        print("note: %s is missing (apt-get install %s); using generated data."
              % (folder, mnist.DEBIAN_PACKAGE))
        use_fake_data = True
    if use_fake_data:
        images, labels = mnist.make_fake_data(4 * eval_size)
        train = pack(images[: 3 * eval_size], labels[: 3 * eval_size])
        test = pack(images[3 * eval_size:], labels[3 * eval_size:])
        description = "fake (%d examples)" % len(images)
    else:
        train = pack(*mnist.load_mnist_arrays(folder, "train"))
        test = pack(*mnist.load_mnist_arrays(folder, "test"))
        description = os.path.abspath(folder)
    eval_rows = comparison.evaluation_subset(train, eval_size, seed + 2)
    return train, eval_rows, test, description


# ---------------------------------------------------------------- model


def initial_weights(seed: int = 0):
    """`(kernel, bias)` per layer: Glorot-uniform kernels, zero biases."""
    rng = np.random.RandomState(seed)
    weights, channels, size = [], 1, mnist.IMAGE_SIZE
    for kernel_size, out_channels in CONV_LAYERS:
        fan_in = kernel_size * kernel_size * channels
        fan_out = kernel_size * kernel_size * out_channels
        shape = (kernel_size, kernel_size, channels, out_channels)
        weights.append((_glorot(rng, shape, fan_in, fan_out), np.zeros([out_channels])))
        channels, size = out_channels, -(-size // POOL_STRIDE)
    fan_in = size * size * channels
    weights.append((_glorot(rng, (fan_in, NUM_LABELS), fan_in, NUM_LABELS),
                    np.zeros([NUM_LABELS])))
    return [(kernel.astype(np.float32), bias.astype(np.float32))
            for kernel, bias in weights]


def _glorot(rng, shape, fan_in, fan_out):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


@dataclasses.dataclass
class Convnet:
    """The graph pieces of one convnet: what the comparison harness reads
    (`inputs`, `loss`, `loss_fn`) and the test metrics' tensors."""

    inputs: tf.Tensor
    params: list
    loss: tf.Tensor
    accuracy: tf.Tensor
    forward: object

    def loss_fn(self, inputs: tf.Tensor) -> tf.Tensor:
        """The mean cross-entropy on another packed batch (same variables)."""
        return self.forward(inputs, None)[0]


def _forward(params, packed, layer_collection):
    """`(loss, accuracy)` of a packed batch; registers the layers and the
    predictive distribution with `layer_collection` (None: no registration)."""
    activations, labels = unpack(packed)
    for kernel, bias in params[:-1]:
        layer_input = activations
        pre = tf.nn.bias_add(
            tf.nn.conv2d(layer_input, kernel, [1, 1, 1, 1], "SAME"), bias
        )
        activations = tf.nn.max_pool(
            tf.nn.relu(pre), [1, POOL_SIZE, POOL_SIZE, 1],
            [1, POOL_STRIDE, POOL_STRIDE, 1], "SAME",
        )
        if layer_collection is not None:
            layer_collection.register_conv2d(
                (kernel, bias), (1, 1, 1, 1), "SAME", layer_input, pre
            )
    flat = tf.reshape(activations, [-1, int(np.prod(activations.shape[1:]))])
    logits = tf.nn.bias_add(tf.matmul(flat, params[-1][0]), params[-1][1])
    if layer_collection is not None:
        layer_collection.register_fully_connected(params[-1], flat, logits)
    return _loss_and_accuracy(logits, labels, layer_collection)


def _loss_and_accuracy(logits, labels, layer_collection):
    """Mean softmax cross-entropy and accuracy; registers the predictive
    distribution with `layer_collection` (None: no registration)."""
    if layer_collection is not None:
        layer_collection.register_categorical_predictive_distribution(logits)
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
    correct = tf.equal(labels, tf.argmax(logits, 1))
    accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))
    return loss, accuracy


def build_convnet(inputs: tf.Tensor, weights, layer_collection=None) -> Convnet:
    """Variables `convnet/layer_<i>/{kernel,bias}` from numpy `weights`, the
    forward pass on the packed `inputs`, and (with a collection) the
    registrations."""
    params = []
    with tf.variable_scope("convnet"):
        for index, (kernel, bias) in enumerate(weights):
            with tf.variable_scope("layer_%d" % index):
                params.append((tf.get_variable("kernel", initializer=kernel),
                               tf.get_variable("bias", initializer=bias)))

    def forward(packed, collection):
        return _forward(params, packed, collection)

    loss, accuracy = forward(inputs, layer_collection)
    return Convnet(inputs, params, loss, accuracy, forward)


def build_residual(inputs: tf.Tensor, weights, layer_collection=None) -> Convnet:
    """`residual`'s network from numpy `weights` (`residual.initial_weights`)
    on the packed `inputs`, and (with a collection) the registrations."""
    params = residual.make_variables(weights)

    def forward(packed, collection):
        images, labels = unpack(packed)
        return _loss_and_accuracy(
            residual.logits(params, images, collection), labels, collection)

    loss, accuracy = forward(inputs, layer_collection)
    return Convnet(inputs, list(params.values()), loss, accuracy, forward)


# architecture: (initial weights from a seed, model builder)
ARCHITECTURES = {
    "convnet": (initial_weights, build_convnet),
    "residual": (residual.initial_weights, build_residual),
}


def build_training_graph(spec: OptimizerSpec, settings: ConvnetSettings,
                         input_size: int) -> TrainingGraph:
    """`settings.architecture`'s network (its initial weights of
    `settings.seed`) and `spec`'s training op."""
    if input_size != IMAGE_PIXELS + 1:
        raise ValueError("Packed rows must have {} columns (pixels and label), got {}."
                         .format(IMAGE_PIXELS + 1, input_size))
    make_weights, build = ARCHITECTURES[settings.architecture]
    weights = make_weights(settings.seed)
    return comparison_training.build_training_graph(
        spec, settings, input_size,
        lambda inputs, collection: build(inputs, weights, collection))


# ---------------------------------------------------------------- runs


def evaluate_after(graph_ops: TrainingGraph, sess, test: np.ndarray, chunk=2500):
    """`(test loss, test accuracy)` over the packed `test` rows."""
    model = graph_ops.model
    totals = np.zeros(2)
    for start in range(0, len(test), chunk):
        batch = test[start:start + chunk]
        totals += len(batch) * np.array(
            sess.run([model.loss, model.accuracy], {model.inputs: batch}))
    return tuple(float(value) for value in totals / len(test))


def train_one(spec: OptimizerSpec, settings: ConvnetSettings, train, eval_rows, test,
              progress=None, build_graph=None) -> Dict:
    """`comparison_training.train_one` on the convnet (or on the model of
    `build_graph(spec, settings, input_size)`, whose model has `inputs`,
    `loss` and `accuracy`), plus `test_loss` and `test_accuracy` of the final
    weights (off the clock)."""
    build_graph = build_graph or build_training_graph
    final = {}

    def build(run_spec, run_settings, input_size):
        ops = build_graph(run_spec, run_settings, input_size)
        final["ops"] = ops
        return ops

    def test_metrics(sess):
        test_loss, test_accuracy = evaluate_after(final["ops"], sess, test)
        return {"test_loss": test_loss, "test_accuracy": test_accuracy}

    record = comparison_training.train_one(
        build, spec, settings, train, eval_rows, progress,
        after_training=lambda sess: final.update(test_metrics(sess)),
        budgets=settings.budgets, at_budget=test_metrics,
    )
    record.update(test_loss=final["test_loss"], test_accuracy=final["test_accuracy"])
    return record


def compare(specs: Sequence[OptimizerSpec], settings, data,
            record_path: str, progress=None, build_graph=None) -> Dict:
    """Trains every spec; the JSON record (rewritten after each run) as in
    `autoencoder_mnist.compare`, each run with its test loss and accuracy.
    `build_graph` as in `train_one`."""
    train, eval_rows, test, source = data
    os.makedirs(os.path.dirname(record_path) or ".", exist_ok=True)
    result = comparison_training.new_record(settings, source, eval_rows)
    comparison_training.train_all(
        lambda spec, run_settings, rows, evals, bar: train_one(
            spec, run_settings, rows, evals, test, bar, build_graph),
        specs, lambda spec: settings, train, eval_rows, result, record_path, progress,
    )
    comparison_training.add_reference_target(result, record_path)
    return result


def format_test_metrics(runs: Sequence[Dict]) -> str:
    """A markdown table: steps run, seconds, test loss and accuracy, and
    milliseconds per training step per run."""
    lines = ["| run | steps run | seconds | test loss | test accuracy | ms/step |",
             "|---|---|---|---|---|---|"]
    for run in runs:
        lines.append("| {} | {} | {:.1f} | {:.4f} | {:.4f} | {:.1f} |".format(
            run["name"], run["steps"], run["seconds"], run["test_loss"],
            run["test_accuracy"], 1000.0 * run["seconds"] / max(run["steps"], 1)))
    return "\n".join(lines)


def format_budget_metrics(runs: Sequence[Dict]) -> str:
    """A markdown table of every run's test accuracy and loss at each of its
    budgets (`budgets` in the run records); "" when no run has any."""
    budgets = sorted({entry["budget"] for run in runs
                      for entry in run.get("budgets", ())})
    if not budgets:
        return ""
    header = ["run"] + ["test acc / loss at {:g} s".format(budget)
                        for budget in budgets]
    lines = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        at = {entry["budget"]: entry for entry in run.get("budgets", ())}
        cells = [run["name"]] + [
            "{:.4f} / {:.4f}".format(at[budget]["test_accuracy"],
                                     at[budget]["test_loss"])
            if budget in at else "—" for budget in budgets]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_best_at_budgets(runs: Sequence[Dict]) -> str:
    """A markdown table: at each budget, each optimizer family's best test
    accuracy and the run that had it (a grid's runs chosen on the test split,
    alike for every family); "" without budgets or with one run per family
    (the budget table says it all then)."""
    families = [family for family in FAMILIES
                if any(run["config"]["optimizer"]["kind"] == family for run in runs)]
    budgets = sorted({entry["budget"] for run in runs
                      for entry in run.get("budgets", ())})
    if not budgets or len(runs) == len(families):
        return ""
    lines = ["", "| best test accuracy at | " + " | ".join(families) + " |",
             "|" + "---|" * (len(families) + 1)]
    for budget in budgets:
        cells = ["{:g} s".format(budget)]
        for family in families:
            scored = [(entry["test_accuracy"], run["name"])
                      for run in runs if run["config"]["optimizer"]["kind"] == family
                      for entry in run.get("budgets", ()) if entry["budget"] == budget]
            cells.append("{:.4f} ({})".format(*max(scored)) if scored else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- grids

FAMILIES = ("sgd", "adam", "kfac", "kfac_qmodel")


def best_per_family(runs: Sequence[Dict]) -> Dict[str, Dict]:
    """`{kind: its run with the lowest final evaluation loss}` (diverged
    runs count as infinite)."""
    best = {}
    for run in runs:
        family = run["config"]["optimizer"]["kind"]
        if family not in best or (comparison.final_loss(run)
                                  < comparison.final_loss(best[family])):
            best[family] = run
    return best


def plot_grid(record: Dict, path: str, architecture: str = "convnet") -> bool:
    """Loss against steps and seconds (log y) of the best run per family,
    the SGD target dotted; False without matplotlib."""
    best = best_per_family(record["runs"])
    runs = [dict(best[family], name=best[family]["name"])
            for family in ("sgd", "adam", "kfac_qmodel", "kfac") if family in best]
    return comparison.plot_records(
        runs, path, record.get("target"),
        title="{}: best run per optimizer".format(architecture.capitalize()),
        max_loss=PLOT_MAX_LOSS, log_y=True)


def summarize_grid(record: Dict, target_family: str = "sgd") -> None:
    """Adds `best` (run name per family), `target` (the final loss of the best
    run of `target_family`) and `table` (the best SGD and Adam runs, as "sgd"
    and "adam", then every K-FAC run; ratios against both) to a grid
    comparison's record."""
    runs = record["runs"]
    best = best_per_family(runs)
    record["best"] = {family: run["name"] for family, run in best.items()}
    target = comparison.final_loss(best[target_family])
    if not math.isfinite(target):
        return
    rows = [dict(best[family], name=family) for family in ("sgd", "adam")
            if family in best]
    rows += [run for run in runs
             if run["config"]["optimizer"]["kind"].startswith("kfac")]
    record["target"] = target
    record["table"] = comparison.target_table(rows, target, ("sgd", "adam"))


# The modes reported like the grid (`summarize_grid`, `plot_grid`).
GRID_MODES = tuple(convnet_specs.BEST_MODES)


FLAGS_TABLE = (
    ("string", "data_dir", None, "MNIST-format folder (default: Fashion-MNIST)."),
    ("bool", "use_fake_data", False, "Train on generated data instead."),
    ("enum", "architecture", "convnet", "The example's convnet, or the residual "
     "convnet of bench/residual.py.", tuple(ARCHITECTURES)),
    ("list", "budgets", [], "Seconds of training at which each run's test loss "
     "and accuracy are recorded (equal wall-clock comparisons), e.g. 60,180."),
    ("bool", "quick", False, "45 s per run instead of 120 s."),
    ("bool", "ekfac", False, "EKFAC against K-FAC (issue #16)."),
    ("bool", "reduce", False, "KFAC-reduce against KFC convolution blocks."),
    ("bool", "amortized", False, "K-FAC with covariances every 5/10 steps."),
    ("bool", "schedule", False, "K-FAC with a halving learning rate."),
    ("bool", "tune", False, "K-FAC's settings changed one at a time."),
    ("bool", "combine", False, "The changes that helped in --tune, combined."),
    ("bool", "sampled", False, "Tuned K-FAC with sampled conv patches."),
    ("bool", "tune_sampled", False, "K-FAC's best configuration, one change each."),
    ("bool", "stats_batch", False, "K-FAC's statistics from part of each batch."),
    ("bool", "best", False, "The best SGD, Adam and K-FAC runs (long budgets)."),
    ("bool", "best_wd", False, "The best runs with their best weight decays, "
     "annealed (repeat them with --seed)."),
    ("bool", "regularized", False, "The best runs with their best weight decays, "
     "annealed, and K-FAC's with its damping or norm constraint changed."),
    ("bool", "stronger_decay", False, "The best runs with their best weight "
     "decays, and those whose best was the grid's largest with 6e-3 and 1e-2."),
    ("bool", "scheduled_clip", False, "The best runs with their best weight "
     "decays, and K-FAC's with its norm constraint following the schedule."),
    ("bool", "large_batch", False, "The best runs, and K-FAC's with 2x and 4x "
     "the batch (the same examples in the same order)."),
    ("bool", "large_batch_tune", False, "The best SGD and Adam runs, and K-FAC "
     "at 3x the batch, or 4x with one more change each."),
    ("bool", "large_batch_best", False, "The best SGD and Adam runs, and K-FAC "
     "at 4x the batch with damping 0.03 (repeat with --seed)."),
    ("bool", "large_batch_wd", False, "The best runs with their best weight "
     "decays, and K-FAC's best at 4x the batch with decay, all annealed."),
    ("bool", "double_batch_wd", False, "As --large_batch_wd, K-FAC at 2x the "
     "batch with its decay per step and 2x it."),
    ("bool", "annealed", False, "With --best or --tuned_kfac: every learning rate "
     "halves every tenth of the time budget after its first half."),
    ("list", "weight_decays", [], "With --best: each run once per decoupled weight "
     "decay (per step, scaled by the learning-rate schedule), e.g. 0,1e-4,3e-4."),
    ("bool", "kfac_only", False, "SGD lr 0.03 and the K-FAC runs, no grids."),
    ("bool", "tuned_kfac", False, "The grids with K-FAC's best configuration only."),
    ("integer", "seed", ConvnetSettings.seed, "Initial weights, batch order and "
     "evaluation subset; outputs named `_seed<N>` unless 0."),
    ("integer", "eval_size", 2000, "Training images in the evaluation subset."),
    ("integer", "batch_size", ConvnetSettings.batch_size, "Images per step."),
    ("integer", "eval_every", ConvnetSettings.eval_every, "Steps between evaluations."),
    ("integer", "max_steps", None, "Also stop each run after this many steps."),
    ("float", "max_seconds", None, "Seconds per run (default: 45 quick, 120 full)."),
    ("string", "output_dir", OUTPUT_DIR, "Where the JSON, markdown and PNG go."),
)


def define_flags(flag_values=flags.FLAGS):
    """Defines FLAGS_TABLE in `flag_values`."""
    _cli.define_flags(FLAGS_TABLE, flag_values)


def run_from_flags(flag_values=flags.FLAGS) -> Dict:
    """Runs the comparison the flags describe, writes `<name>.json` and
    `<name>.md` (and for the grid `<name>.png`) to `--output_dir`, prints
    the report, returns the record."""
    max_seconds = flag_values.max_seconds
    if max_seconds is None:
        max_seconds = 45.0 if flag_values.quick else 120.0
    budgets = tuple(sorted(float(budget) for budget in flag_values.budgets))
    if budgets:
        max_seconds = max(max_seconds, budgets[-1])
    settings = ConvnetSettings(
        batch_size=flag_values.batch_size, max_steps=flag_values.max_steps,
        max_seconds=max_seconds, eval_every=flag_values.eval_every,
        architecture=flag_values.architecture, budgets=budgets, seed=flag_values.seed)
    data = load_data(flag_values.data_dir, flag_values.use_fake_data,
                     flag_values.eval_size, settings.seed)
    modes = tuple(convnet_specs.PAIRED_MODES) + GRID_MODES
    mode = next((mode for mode in modes if getattr(flag_values, mode)), None)
    architecture = settings.architecture
    name, specs, title, references = convnet_specs.comparison_specs(
        mode, architecture, flag_values.kfac_only, flag_values.tuned_kfac,
        flag_values.annealed, [float(decay) for decay in flag_values.weight_decays])
    if settings.batch_size != ConvnetSettings.batch_size:
        name += "_b{}".format(settings.batch_size)
    if settings.seed != ConvnetSettings.seed:
        name += "_seed{}".format(settings.seed)
    path = os.path.join(flag_values.output_dir, name + ".json")
    record = compare(specs, settings, data, path,
                     progress=comparison.Progress(max_steps=settings.max_steps,
                                                 max_seconds=settings.max_seconds))
    if mode is None or mode in GRID_MODES:
        summarize_grid(record)
        comparison.write_json(path, record)
        plot_grid(record, os.path.join(flag_values.output_dir, name + ".png"),
                  architecture)
    if "target" not in record:
        raise SystemExit("The SGD reference run has no finite loss: no target.")
    text = report_text(record, title, references)
    with open(os.path.join(flag_values.output_dir, name + ".md"), "w") as handle:
        handle.write(text)
    print(text)
    return record


def report_text(record: Dict, title: str, references: Sequence[str]) -> str:
    """The markdown report of a comparison's record (with its `target` and
    `table`): the target table, every run's test metrics, and the test
    metrics at the budgets."""
    settings = record["settings"]
    best = "".join("Best {}: {}. ".format(family, run_name)
                   for family, run_name in record.get("best", {}).items())
    return "# {}, {}, {} s per run ({})\n\n{}{}\n\n{}\n{}{}".format(
        title, settings["architecture"], settings["max_seconds"],
        record["data"], best + "\n\n" if best else "",
        comparison.format_table(record["table"], record["target"], references),
        format_test_metrics(record["runs"]), format_budget_metrics(record["runs"]),
        format_best_at_budgets(record["runs"]))


def main(argv):
    del argv
    run_from_flags()


if __name__ == "__main__":
    define_flags()
    app.run(main)
