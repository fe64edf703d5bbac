r"""Benchmark: KFAC-expand against KFAC-reduce, Adam and SGD on sequences (#17).

The model is the RNN of `kfac.examples.rnn_mnist` (one tanh layer of 128
units whose weight matrix is shared by the 28 rows of an image, registered
with `register_fully_connected_multi`, then a softmax layer) on Fashion-MNIST
(generated sequences with `--use_fake_data` or when the folder is missing),
in two variants:

* full sequences: the example's fixed-length model (28 rows);
* padded sequences (`--min_lengths`, default 8): each image keeps a random
  first 8-28 rows (`rnn_mnist.pad_to_random_lengths`: the example's lengths),
  the rest zeros; the masked RNN, its layer registered with
  `mask=tf.sequence_mask(lengths, 28)`.

For each, K-FAC with the recurrent layer's approximation "kron_expand" (the
uses as independent examples, `F ≈ T·(A ⊗ G)`) and "kron_reduce"
(Eschenhagen et al. 2023: inputs averaged and output gradients summed over
each example's steps, `B` rows instead of `T·B` in the outer products), Adam
and SGD with momentum 0.9. K-FAC: regular momentum 0.9, fixed damping,
`PeriodicInvCovUpdateKfacOpt` with covariances every step (decay 0.95,
started at zero and debiased) and inverses every 5 steps, all inside its
training op; the output layer is registered with the same approximation name
(on its `[batch, 128]` inputs both are the plain Kronecker block).

Protocol (`kfac.examples.comparison_training`, as `bench/convnet.py`): every
run starts from the same weights and sees the same mini-batches (batch 128)
in the same order; a fixed wall-clock budget per run (`--max_seconds`; quick
40 s, full 150 s), the clock counting training only. The loss is evaluated on
2,000 fixed training images every 50 steps; the **target is the final
evaluation loss of the best Adam run** of the same variant; the table gives
steps and seconds to it, with ratios against the best Adam and SGD runs.
After training, off the clock: the test loss and accuracy on the 10,000 test
images. `--quick` runs the example's hyperparameters (K-FAC lr 0.003, damping
0.1; Adam lr 0.001) and SGD at lr 0.01; the full run two values each
(`full_specs`: K-FAC (lr, damping) (0.003, 0.1) and (0.03, 1), Adam 3e-4 and
1e-3, SGD 0.003 and 0.01; in 15 s probes on full sequences K-FAC-reduce
diverged at (0.01, 0.1), SGD at 0.03, and Adam 3e-3 ended above 1e-3).

Cost, in the same process after the runs: per variant, the K-FAC graphs of
both approximations with separate ops, timed interleaved on a fixed batch
(`bench.interleaved`, median over blocks): the training step alone, the step
with the covariance update, the covariance update alone and the inverse
update; reduce/expand ratios. The training runs' own milliseconds per step
(back to back) are compared at equal hyperparameters too.

Writes `<output_dir>/sequences.json` (rewritten after every run) and
`sequences.md`.

Run:
  python -m bench.sequences --quick  # 40 s a run, ~7 min (make bench-sequences-quick)
  python -m bench.sequences          # 150 s a run, ~50 min (make bench-sequences)
"""

import dataclasses
import os
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags

import kfac
from bench import convnet
from bench import interleaved
from bench.autoencoder_micro import session_callables
from kfac.examples import _cli
from kfac.examples import comparison
from kfac.examples import comparison_training
from kfac.examples import mnist
from kfac.examples import rnn_mnist
from kfac.examples.comparison_training import OptimizerSpec
from kfac.examples.comparison_training import TrainingGraph

OUTPUT_DIR = os.path.join("bench", "results")
NAME = "sequences"
NUM_STEPS = mnist.IMAGE_SIZE
# Packed rows: the image's 784 pixels, its label, its length.
ROW_SIZE = convnet.IMAGE_PIXELS + 2
APPROXIMATIONS = ("kron_expand", "kron_reduce")
MICRO_OPS = ("train_step", "train_and_cov_step", "cov_update", "inv_update")
QUICK_SECONDS, FULL_SECONDS = 40.0, 150.0


@dataclasses.dataclass(frozen=True)
class SequenceSettings:
    """What every run of one variant shares; `min_length` below 28: padded
    sequences of random lengths in `[min_length, 28]`."""

    batch_size: int = rnn_mnist.BATCH_SIZE
    max_steps: Optional[int] = None
    max_seconds: Optional[float] = QUICK_SECONDS
    eval_every: int = 50
    seed: int = 0
    hidden_size: int = rnn_mnist.HIDDEN_SIZE
    min_length: int = NUM_STEPS
    # Seconds of training after which test metrics are recorded
    # (`convnet.train_one`, which these runs go through; none by default).
    budgets: tuple = ()


# ---------------------------------------------------------------- data


def pack(images: np.ndarray, labels: np.ndarray, lengths) -> np.ndarray:
    """float32 `[N, 786]`: each image's pixels, its label, its length (None:
    every image full length)."""
    if lengths is None:
        lengths = np.full([len(images)], NUM_STEPS)
    return np.concatenate(
        [convnet.pack(images, labels), lengths.astype(np.float32)[:, None]], axis=1)


def unpack(packed: tf.Tensor):
    """`(sequences [B, 28, 28], int64 labels [B], int32 lengths [B])`."""
    images, labels = convnet.unpack(packed[:, :-1])
    lengths = tf.cast(tf.round(packed[:, -1]), tf.int32)
    return tf.squeeze(images, -1), labels, lengths


def load_data(data_dir: Optional[str], use_fake_data: bool, eval_size: int,
              min_length: int, seed: int):
    """`(train, eval, test, description)`, packed, the images padded to random
    lengths as `rnn_mnist` pads them; `eval` a fixed subset of `train`."""
    folder = data_dir or mnist.DEFAULT_DATA_DIR
    if not use_fake_data and not os.path.isdir(folder):
        print("note: %s is missing (apt-get install %s); using generated data."
              % (folder, mnist.DEBIAN_PACKAGE))
        use_fake_data = True
    data = rnn_mnist.load_data(folder, use_fake_data)
    description = "generated sequences" if use_fake_data else os.path.abspath(folder)
    (train_x, train_y, test_x, test_y), lengths = rnn_mnist.pad_to_random_lengths(
        data, min_length)
    train = pack(train_x, train_y, lengths[0])
    test = pack(test_x, test_y, lengths[1])
    eval_rows = comparison.evaluation_subset(train, eval_size, seed + 2)
    return train, eval_rows, test, description


# ---------------------------------------------------------------- model


@dataclasses.dataclass
class SequenceModel:
    """What the comparison harness and `convnet.evaluate_after` read."""

    inputs: tf.Tensor
    loss: tf.Tensor
    accuracy: tf.Tensor
    forward: object

    def loss_fn(self, inputs: tf.Tensor) -> tf.Tensor:
        """The mean cross-entropy on another packed batch (same variables;
        registered with a throwaway collection)."""
        # AUTO_REUSE: the variables exist, the throwaway collection's blocks not.
        with tf.variable_scope(tf.get_variable_scope(), reuse=tf.AUTO_REUSE):
            return self.forward(inputs, kfac.LayerCollection())[0]


def build_rnn(inputs: tf.Tensor, settings: SequenceSettings, approx: str,
              layer_collection=None) -> SequenceModel:
    """`rnn_mnist.build_model` on packed rows (weights from `settings.seed`),
    masked when `settings.min_length < 28`; registered with
    `layer_collection` (None: a throwaway collection, for SGD and Adam)."""
    padded = settings.min_length < NUM_STEPS

    def forward(packed, collection):
        sequences, labels, lengths = unpack(packed)
        loss, accuracy, _ = rnn_mnist.build_model(
            sequences, labels, collection, settings.hidden_size, approx,
            seed=settings.seed, lengths=lengths if padded else None)
        return loss, accuracy

    loss, accuracy = forward(inputs, layer_collection or kfac.LayerCollection())
    return SequenceModel(inputs, loss, accuracy, forward)


def build_training_graph(spec: OptimizerSpec, settings: SequenceSettings,
                         input_size: int, periodic: bool = True) -> TrainingGraph:
    """The RNN and `spec`'s training ops; the recurrent layer's K-FAC
    approximation is `spec.approximation` (None: "kron_expand")."""
    if input_size != ROW_SIZE:
        raise ValueError("Packed rows must have {} columns (pixels, label, length), "
                         "got {}.".format(ROW_SIZE, input_size))
    approx = spec.approximation or APPROXIMATIONS[0]
    return comparison_training.build_training_graph(
        spec, settings, input_size,
        lambda inputs, collection: build_rnn(inputs, settings, approx, collection),
        periodic)


# ---------------------------------------------------------------- specs


def kfac_spec(approx: str, learning_rate: float, damping: float) -> OptimizerSpec:
    return OptimizerSpec(
        "kfac", learning_rate, damping=damping, momentum=0.9,
        inv_update_every=rnn_mnist.INVERT_EVERY, cov_ema_decay=rnn_mnist.COV_EMA_DECAY,
        approximation=approx, label="kfac {} lr={:g} damping={:g}".format(
            approx[len("kron_"):], learning_rate, damping))


def specs(kfac_settings, adam_lrs, sgd_lrs) -> List[OptimizerSpec]:
    """K-FAC expand and reduce at each `(lr, damping)`, then Adam and SGD
    (momentum 0.9) at each learning rate."""
    runs = [kfac_spec(approx, lr, damping) for lr, damping in kfac_settings
            for approx in APPROXIMATIONS]
    runs += [OptimizerSpec("adam", lr, label="adam lr={:g}".format(lr))
             for lr in adam_lrs]
    runs += [OptimizerSpec("sgd", lr, momentum=0.9, label="sgd lr={:g}".format(lr))
             for lr in sgd_lrs]
    return runs


def quick_specs() -> List[OptimizerSpec]:
    """The example's K-FAC and Adam settings, SGD at lr 0.01."""
    kfac_defaults = rnn_mnist.DEFAULT_HYPERPARAMETERS["kfac"]
    return specs([(kfac_defaults["learning_rate"], kfac_defaults["damping"])],
                 [rnn_mnist.DEFAULT_HYPERPARAMETERS["adam"]["learning_rate"]], [0.01])


def full_specs() -> List[OptimizerSpec]:
    """Two values per optimizer, the quick ones among them."""
    return specs([(0.003, 0.1), (0.03, 1.0)], [3e-4, 1e-3], [0.003, 0.01])


# ---------------------------------------------------------------- cost


def step_cost(runs: Sequence[Dict]) -> List[Dict]:
    """Per K-FAC setting run with both approximations: milliseconds per step
    of each training run (the periodic op, back to back) and reduce/expand."""
    by_setting = {}
    for run in runs:
        config = run["config"]["optimizer"]
        if config["kind"] != "kfac" or run["steps"] == 0:
            continue
        key = (config["learning_rate"], config["damping"])
        by_setting.setdefault(key, {})[config["approximation"]] = (
            1000.0 * run["seconds"] / run["steps"])
    rows = []
    for (learning_rate, damping), ms in by_setting.items():
        if set(APPROXIMATIONS) <= set(ms):
            expand, reduce = (ms[approx] for approx in APPROXIMATIONS)
            rows.append({"learning_rate": learning_rate, "damping": damping,
                         "expand_ms": expand, "reduce_ms": reduce,
                         "ratio": reduce / expand})
    return rows


def micro_benchmark(settings: SequenceSettings, train: np.ndarray, steps: int,
                    blocks: int) -> Dict:
    """Median milliseconds of K-FAC's ops (`MICRO_OPS`) for both
    approximations on one fixed batch, interleaved; reduce/expand ratios."""
    batch = train[: settings.batch_size]
    kfac_defaults = rnn_mnist.DEFAULT_HYPERPARAMETERS["kfac"]
    variants, sessions = {}, []
    for approx in APPROXIMATIONS:
        spec = kfac_spec(approx, kfac_defaults["learning_rate"],
                         kfac_defaults["damping"])
        ops = build_training_graph(spec, settings, ROW_SIZE, periodic=False)
        sess = tf.Session(graph=ops.graph)
        sessions.append(sess)
        with ops.graph.as_default():
            sess.run(tf.global_variables_initializer())
        ops.graph.finalize()
        for op_name, run_op in session_callables(ops, sess, batch).items():
            variants["{} {}".format(approx, op_name)] = (
                lambda step, run_op=run_op: run_op())
    try:
        seconds = interleaved.median_seconds_per_step(variants, steps, blocks)
    finally:
        for sess in sessions:
            sess.close()
    ms = {name: 1000.0 * value for name, value in seconds.items()}
    return {
        "ms": ms,
        "ratio_reduce_to_expand": {
            op: ms["kron_reduce " + op] / ms["kron_expand " + op] for op in MICRO_OPS},
        "steps_per_block": steps,
        "blocks": blocks,
    }


# ---------------------------------------------------------------- report


def variant_title(min_length: int) -> str:
    if min_length >= NUM_STEPS:
        return "Full sequences (28 rows)"
    return "Padded sequences (lengths {}-{}, masked)".format(min_length, NUM_STEPS)


def format_cost(record: Dict) -> str:
    """The cost tables of one variant: training runs and interleaved ops."""
    lines = ["| K-FAC ops | expand ms | reduce ms | reduce/expand |",
             "|---|---|---|---|"]
    for row in record["step_cost"]:
        lines.append("| training run lr={:g} damping={:g} (ms/step, back to back) "
                     "| {:.2f} | {:.2f} | {:.2f} |".format(
                         row["learning_rate"], row["damping"], row["expand_ms"],
                         row["reduce_ms"], row["ratio"]))
    micro = record["micro"]["ms"]
    rows = [(op + " (median, interleaved)",
             *(micro["{} {}".format(approx, op)] for approx in APPROXIMATIONS))
            for op in MICRO_OPS]
    # What the covariance update adds to a step that has run the forward pass.
    rows.append(("train_and_cov_step - train_step", *(
        micro[approx + " train_and_cov_step"] - micro[approx + " train_step"]
        for approx in APPROXIMATIONS)))
    for name, expand, reduce in rows:
        lines.append("| {} | {:.2f} | {:.2f} | {:.2f} |".format(
            name, expand, reduce, reduce / expand))
    return "\n".join(lines)


def format_report(result: Dict) -> str:
    parts = ["# KFAC-expand vs KFAC-reduce on sequences, {} s per run ({})".format(
        result["max_seconds"], result["data"]),
        "Target: the final evaluation loss (2,000 training images) of the best "
        "Adam run of the variant. Ratios above 1: this run needed fewer "
        "steps or seconds.",
        "Cost tables: `cov_update` alone also runs the forward pass and the "
        "backward pass of the sampled targets, which both approximations "
        "share; `train_and_cov_step - train_step` (difference of the medians) "
        "is what the covariance update adds to a step whose forward pass has "
        "run."]
    for record in result["variants"]:
        parts.append("## " + variant_title(record["settings"]["min_length"]))
        best = ", ".join("{}: {}".format(family, name)
                         for family, name in record["best"].items())
        parts.append("Best per optimizer: " + best + ".")
        if "table" in record:
            parts.append(comparison.format_table(record["table"], record["target"],
                                                 ("adam", "sgd")))
        parts.append(convnet.format_test_metrics(record["runs"]))
        parts.append(format_cost(record))
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- main

FLAGS_TABLE = (
    ("string", "data_dir", None, "MNIST-format folder (default: Fashion-MNIST)."),
    ("bool", "use_fake_data", False, "Train on generated sequences instead."),
    ("bool", "quick", False, "40 s per run and one setting per optimizer."),
    ("list", "min_lengths", ["28", "8"],
     "One variant per value: 28 full sequences, below: padded to 28."),
    ("integer", "eval_size", 2000, "Training images in the evaluation subset."),
    ("integer", "batch_size", SequenceSettings.batch_size, "Sequences per step."),
    ("integer", "hidden_size", SequenceSettings.hidden_size, "RNN state size."),
    ("integer", "eval_every", SequenceSettings.eval_every,
     "Steps between evaluations."),
    ("integer", "max_steps", None, "Also stop each run after this many steps."),
    ("float", "max_seconds", None, "Seconds per run (default: 40 quick, 150 full)."),
    ("integer", "micro_steps", 10, "Steps per timed block of the cost measurement."),
    ("integer", "micro_blocks", 15, "Timed blocks per op (the median is reported)."),
    ("string", "output_dir", OUTPUT_DIR, "Where the JSON and markdown go."),
)


def define_flags(flag_values=flags.FLAGS):
    """Defines FLAGS_TABLE in `flag_values`."""
    comparison.define_flags(FLAGS_TABLE, flag_values)


def run_from_flags(flag_values=flags.FLAGS) -> Dict:
    """Runs both variants, writes `sequences.json` and `sequences.md` to
    `--output_dir`, prints the report, returns the record."""
    max_seconds = _cli.flag_or_default(
        flag_values, "max_seconds", {"max_seconds": FULL_SECONDS},
        {"max_seconds": QUICK_SECONDS})
    run_specs = quick_specs() if flag_values.quick else full_specs()
    path = os.path.join(flag_values.output_dir, NAME + ".json")
    result = {"max_seconds": max_seconds, "variants": []}
    for min_length in (int(value) for value in flag_values.min_lengths):
        settings = SequenceSettings(
            batch_size=flag_values.batch_size, max_steps=flag_values.max_steps,
            max_seconds=max_seconds, eval_every=flag_values.eval_every,
            hidden_size=flag_values.hidden_size, min_length=min_length)
        data = load_data(flag_values.data_dir, flag_values.use_fake_data,
                         flag_values.eval_size, min_length, settings.seed)
        # While a variant runs, the JSON file holds its record alone.
        record = convnet.compare(
            run_specs, settings, data, path,
            progress=comparison.Progress(max_steps=settings.max_steps,
                                         max_seconds=settings.max_seconds),
            build_graph=build_training_graph)
        convnet.summarize_grid(record, target_family="adam")
        record["step_cost"] = step_cost(record["runs"])
        record["micro"] = micro_benchmark(settings, data[0], flag_values.micro_steps,
                                          flag_values.micro_blocks)
        result["variants"].append(record)
        result["data"] = record["data"]
    comparison.write_json(path, result)
    text = format_report(result)
    with open(os.path.join(flag_values.output_dir, NAME + ".md"), "w") as handle:
        handle.write(text)
    print(text)
    return result


main = _cli.record_main(run_from_flags)


if __name__ == "__main__":
    _cli.run(define_flags, main, verbosity=tf.logging.ERROR)
