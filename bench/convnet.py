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
INVERSE_PERIOD = 10
# The plot's y axis ends a little above the initial loss (log 10 = 2.30).
PLOT_MAX_LOSS = 3.0
LONG_PERIOD = 5 * INVERSE_PERIOD


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


# ---------------------------------------------------------------- specs

SGD_REFERENCE = OptimizerSpec("sgd", 0.03, momentum=0.9, label="sgd")
# Initial damping 0.01 blows up within 3 steps (the first inverses come
# from one batch; LM adaptation moves damping only every 5 steps).
QMODEL = dict(learning_rate=1.0, damping=0.1, momentum=0.0)
REGULAR = dict(learning_rate=0.1, damping=0.01, momentum=0.9, norm_constraint=0.01)


# Learning-rate grids: 10x each way of the best value (SGD 0.03, Adam 1e-3
# on this model and budget).
SGD_LRS = (0.003, 0.01, 0.03, 0.1, 0.3)
ADAM_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
FAMILIES = ("sgd", "adam", "kfac", "kfac_qmodel")


def kfac_specs():
    """Every K-FAC configuration of the optimizer comparison (#14), labelled
    by what differs from the plain one: the conv input factors from sampled
    patches (`sub_sample_patches`, at most 3 per patch coordinate) and
    covariances every `cov_update_every` steps."""
    runs = []
    for kind, optimizer in (("kfac_qmodel", QMODEL), ("kfac", REGULAR)):
        for sub_sample, cov_every in ((False, 1), (True, 1), (True, 2)):
            label = kind + (" sampled patches" if sub_sample else "")
            if cov_every > 1:
                label += " cov every {}".format(cov_every)
            runs.append(OptimizerSpec(
                kind, inv_update_every=INVERSE_PERIOD, cov_ema_decay=0.95,
                sub_sample_patches=sub_sample, cov_update_every=cov_every,
                label=label, **optimizer))
    # The quadratic model's runs grow unstable after ~200 steps: the
    # Levenberg-Marquardt rule drives the damping from 0.1 to its floor
    # (1e-5) by then. A larger initial damping, and higher floors.
    variants = (("damping=1", dict(damping=1.0)),
                ("min_damping=1e-3", dict(min_damping=1e-3)),
                ("min_damping=1e-2", dict(min_damping=1e-2)))
    for name, change in variants:
        runs.append(OptimizerSpec(
            "kfac_qmodel", inv_update_every=INVERSE_PERIOD, cov_ema_decay=0.95,
            sub_sample_patches=True, label="kfac_qmodel sampled patches " + name,
            **dict(QMODEL, **change)))
    return runs


# The learning-rate schedules tried against the noise floor K-FAC meets
# after a few hundred steps: (label, decay_start, decay_half_life), steps.
QMODEL_DECAYS = (("decay 300/300", 300, 300), ("decay 200/600", 200, 600))
REGULAR_DECAY = ("decay 500/500", 500, 500)
AMORTIZED = dict(inv_update_every=20, cov_update_every=5, cov_ema_decay=0.95,
                 spread_inverse_updates=True)
EVERY_STEP = dict(inv_update_every=INVERSE_PERIOD, cov_ema_decay=0.95)
# The quadratic model with the damping floor that kept it stable (1e-2).
QMODEL_FLOORED = dict(QMODEL, min_damping=1e-2)


def schedule_specs():
    """SGD (the reference), then K-FAC with a halving learning rate: the
    quadratic model (damping floor 1e-2; its chosen step scaled) with
    amortised statistics (covariances every 5 steps, inverses every 20) and
    every step's, and regular momentum with amortised statistics."""
    qmodel = QMODEL_FLOORED
    runs = [SGD_REFERENCE]
    for label, start, half_life in QMODEL_DECAYS:
        runs.append(OptimizerSpec(
            "kfac_qmodel", label="kfac_qmodel cov every 5 inv every 20 " + label,
            decay_start=start, decay_half_life=half_life, **AMORTIZED, **qmodel))
    runs.append(OptimizerSpec(
        "kfac_qmodel", label="kfac_qmodel decay 200/400", decay_start=200,
        decay_half_life=400, inv_update_every=INVERSE_PERIOD, cov_ema_decay=0.95,
        **qmodel))
    label, start, half_life = REGULAR_DECAY
    runs.append(OptimizerSpec(
        "kfac", label="kfac cov every 5 inv every 20 " + label, decay_start=start,
        decay_half_life=half_life, **AMORTIZED, **REGULAR))
    return runs


def residual_kfac_specs():
    """The K-FAC runs of the residual convnet's comparison: the quadratic
    model (damping floor 1e-2) and regular momentum with statistics every
    step (inverses every 10), each also with a halving learning rate, and the
    quadratic model with amortised statistics."""
    qmodel = QMODEL_FLOORED
    label, start, half_life = QMODEL_DECAYS[0]
    reg_label, reg_start, reg_half_life = REGULAR_DECAY
    return [
        OptimizerSpec("kfac_qmodel", label="kfac_qmodel", **EVERY_STEP, **qmodel),
        OptimizerSpec("kfac_qmodel", label="kfac_qmodel " + label, decay_start=start,
                      decay_half_life=half_life, **EVERY_STEP, **qmodel),
        OptimizerSpec("kfac_qmodel", label="kfac_qmodel cov every 5 inv every 20",
                      **AMORTIZED, **qmodel),
        OptimizerSpec("kfac", label="kfac", **EVERY_STEP, **REGULAR),
        OptimizerSpec("kfac", label="kfac " + reg_label, decay_start=reg_start,
                      decay_half_life=reg_half_life, **EVERY_STEP, **REGULAR),
    ]


# The paired comparisons' reference on the residual convnet: its best SGD
# learning rate (docs/benchmark/residual.md), named like SGD_REFERENCE.
RESIDUAL_SGD_REFERENCE = OptimizerSpec("sgd", 0.1, momentum=0.9, label="sgd")


# architecture: the SGD reference of its paired comparisons
SGD_REFERENCES = {"convnet": SGD_REFERENCE, "residual": RESIDUAL_SGD_REFERENCE}


def tuning_specs():
    """SGD (lr 0.1, the residual convnet's best), then K-FAC's settings
    around those of `residual_kfac_specs()`, one change each: regular momentum
    with a 3x larger learning rate, 10x smaller or larger damping, 10x
    tighter or looser norm constraint; the quadratic model with damping
    floors 3e-2 and 1e-1 and with a slower covariance average (0.99)."""
    runs = [RESIDUAL_SGD_REFERENCE]
    regular = (("lr=0.3", dict(learning_rate=0.3)),
               ("damping=1e-3", dict(damping=1e-3)),
               ("damping=0.1", dict(damping=0.1)),
               ("nc=1e-3", dict(norm_constraint=1e-3)),
               ("nc=0.1", dict(norm_constraint=0.1)))
    for label, change in regular:
        runs.append(OptimizerSpec("kfac", label="kfac " + label, **EVERY_STEP,
                                  **dict(REGULAR, **change)))
    qmodel = (("min_damping=3e-2", dict(min_damping=3e-2), 0.95),
              ("min_damping=1e-1", dict(min_damping=1e-1), 0.95),
              ("cov_ema_decay=0.99", dict(min_damping=1e-2), 0.99))
    for label, change, decay in qmodel:
        runs.append(OptimizerSpec(
            "kfac_qmodel", label="kfac_qmodel " + label,
            inv_update_every=INVERSE_PERIOD, cov_ema_decay=decay,
            **dict(QMODEL, **change)))
    return runs


def combined_specs():
    """SGD (lr 0.1), then regular-momentum K-FAC with the two changes that
    helped in `tuning_specs()` on the residual convnet (damping 0.1, norm
    constraint 1e-3), together, with the halving learning rate, and together
    with amortised statistics (covariances every 5 steps, inverses every 20)."""
    runs = [RESIDUAL_SGD_REFERENCE]
    tuned = dict(REGULAR, damping=0.1, norm_constraint=1e-3)
    label, start, half_life = REGULAR_DECAY
    runs.append(OptimizerSpec("kfac", label="kfac damping=0.1 nc=1e-3",
                              **EVERY_STEP, **tuned))
    runs.append(OptimizerSpec("kfac", label="kfac damping=0.1 nc=1e-3 " + label,
                              decay_start=start, decay_half_life=half_life,
                              **EVERY_STEP, **tuned))
    runs.append(OptimizerSpec("kfac", label="kfac damping=0.1 " + label,
                              decay_start=start, decay_half_life=half_life,
                              **EVERY_STEP, **dict(REGULAR, damping=0.1)))
    runs.append(OptimizerSpec("kfac", label="kfac damping=0.1 nc=1e-3 cov every 5 "
                              "inv every 20", **AMORTIZED, **tuned))
    return runs


# architecture: the K-FAC runs of its optimizer comparison
KFAC_SPECS = {"convnet": kfac_specs, "residual": residual_kfac_specs}
# The residual network (batch norm) trains best at larger learning rates:
# in a first grid like the convnet's, SGD's best was 0.3 and Adam's 1e-2,
# each at the edge.
RESIDUAL_SGD_LRS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
RESIDUAL_ADAM_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
# architecture: (SGD learning rates, Adam learning rates)
GRIDS = {"convnet": (SGD_LRS, ADAM_LRS),
         "residual": (RESIDUAL_SGD_LRS, RESIDUAL_ADAM_LRS)}


def grid_specs(architecture="convnet"):
    """SGD with momentum 0.9 and Adam over their grids, then the
    architecture's K-FAC runs (`KFAC_SPECS`)."""
    sgd_lrs, adam_lrs = GRIDS[architecture]
    runs = [OptimizerSpec("sgd", lr, momentum=0.9, label="sgd lr={:g}".format(lr))
            for lr in sgd_lrs]
    runs += [OptimizerSpec("adam", lr, label="adam lr={:g}".format(lr))
             for lr in adam_lrs]
    return runs + KFAC_SPECS[architecture]()


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


def paired_specs(approximations_and_periods, qmodel=QMODEL):
    """SGD (the reference), then for the quadratic model (`qmodel`'s settings)
    and regular momentum with the norm constraint, one run per
    `(approximation, inverse period)` at otherwise equal settings."""
    runs = [SGD_REFERENCE]
    for kind, optimizer in (("kfac_qmodel", qmodel), ("kfac", REGULAR)):
        for approximation, period in approximations_and_periods:
            runs.append(OptimizerSpec(
                kind, inv_update_every=period, cov_ema_decay=0.95,
                approximation=None if approximation == "kron" else approximation,
                label="{} {} inv={}".format(kind, approximation, period), **optimizer))
    return runs


def ekfac_specs():
    """K-FAC and EKFAC pairs of equal settings at equal inverse periods, and
    EKFAC with a 5x longer eigenbasis period (`paired_specs`)."""
    return paired_specs((("kron", INVERSE_PERIOD), ("ekfac", INVERSE_PERIOD),
                         ("ekfac", LONG_PERIOD)))


def amortized_specs():
    """SGD (the reference), then K-FAC with its statistics amortised over
    several steps: covariances every 5 or 10 steps and inverses every 20 or
    50 (spread over the steps between), for the quadratic model (damping
    floor 1e-2) and regular momentum (norm constraint 0.01, and 0.1)."""
    runs = [SGD_REFERENCE]
    qmodel = QMODEL_FLOORED
    schedules = ((5, 20), (10, 50))
    for kind, optimizer in (("kfac_qmodel", qmodel), ("kfac", REGULAR)):
        for cov_every, inv_every in schedules:
            runs.append(OptimizerSpec(
                kind, inv_update_every=inv_every, cov_update_every=cov_every,
                cov_ema_decay=0.95, spread_inverse_updates=True,
                label="{} cov every {} inv every {}".format(kind, cov_every, inv_every),
                **optimizer))
    runs.append(OptimizerSpec(
        "kfac", inv_update_every=20, cov_update_every=5, cov_ema_decay=0.95,
        spread_inverse_updates=True, label="kfac cov every 5 inv every 20 nc=0.1",
        **dict(REGULAR, norm_constraint=0.1)))
    return runs


def reduce_specs():
    """KFC (KFAC-expand) and KFAC-reduce convolution blocks at equal settings
    (`paired_specs`); the quadratic model with the damping floor 1e-2 that
    kept it stable in the optimizer comparison."""
    return paired_specs((("kron", INVERSE_PERIOD), ("kron_reduce", INVERSE_PERIOD)),
                        qmodel=QMODEL_FLOORED)


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
    ("bool", "kfac_only", False, "SGD lr 0.03 and the K-FAC runs, no grids."),
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


# mode flag: (its specs, the report's title); the specs start with an SGD
# reference, replaced by the architecture's (`SGD_REFERENCES`).
PAIRED_MODES = {
    "ekfac": (ekfac_specs, "EKFAC vs K-FAC"),
    "reduce": (reduce_specs, "KFAC-reduce vs KFC"),
    "amortized": (amortized_specs, "Amortised K-FAC statistics"),
    "schedule": (schedule_specs, "K-FAC with a halving learning rate"),
    "tune": (tuning_specs, "K-FAC's settings, one change each"),
    "combine": (combined_specs, "K-FAC's helpful changes combined"),
}


def comparison_specs(mode: Optional[str], architecture: str, kfac_only: bool = False):
    """`(name, specs, title, references)` of a comparison: a paired `mode`
    (`PAIRED_MODES`) against the architecture's SGD reference, or (None) the
    architecture's grid (`kfac_only`: its SGD reference and K-FAC runs)."""
    if mode is not None:
        make_specs, title = PAIRED_MODES[mode]
        specs = [SGD_REFERENCES[architecture]] + make_specs()[1:]
        return architecture + "_" + mode, specs, title, (comparison.REFERENCE,)
    specs = grid_specs(architecture)
    if kfac_only:
        specs = [SGD_REFERENCES[architecture]] + KFAC_SPECS[architecture]()
    return architecture, specs, "Optimizers", ("sgd", "adam")


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
        architecture=flag_values.architecture, budgets=budgets)
    data = load_data(flag_values.data_dir, flag_values.use_fake_data,
                     flag_values.eval_size, settings.seed)
    mode = next((mode for mode in PAIRED_MODES if getattr(flag_values, mode)), None)
    architecture = settings.architecture
    name, specs, title, references = comparison_specs(
        mode, architecture, flag_values.kfac_only)
    path = os.path.join(flag_values.output_dir, name + ".json")
    record = compare(specs, settings, data, path,
                     progress=comparison.Progress(max_steps=settings.max_steps,
                                                 max_seconds=settings.max_seconds))
    if mode is None:
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
    return "# {}, {}, {} s per run ({})\n\n{}{}\n\n{}\n{}".format(
        title, settings["architecture"], settings["max_seconds"],
        record["data"], best + "\n\n" if best else "",
        comparison.format_table(record["table"], record["target"], references),
        format_test_metrics(record["runs"]), format_budget_metrics(record["runs"]))


def main(argv):
    del argv
    run_from_flags()


if __name__ == "__main__":
    define_flags()
    app.run(main)
