r"""The deep autoencoder of the K-FAC paper, trained with K-FAC, SGD and Adam.

The model is the 8-layer MNIST autoencoder of Hinton & Salakhutdinov (2006)
used as the main benchmark of Martens & Grosse (2015, §13):
784-1000-500-250-30-250-500-1000-784, tanh everywhere except the 30-unit code
layer and the output logits, which are linear. The loss is the Bernoulli
cross-entropy between the input pixels (grey levels in [0, 1]) and
`sigmoid(logits)`, summed over the 784 pixels and averaged over the batch.

Every optimizer starts from the same weights and sees the same mini-batches in
the same order (fixed seeds; numpy batches fed through a placeholder). The
clock counts only training (every op an optimizer needs, including K-FAC's
covariance and inverse updates), not graph building or evaluation; the loss
is evaluated every few steps on a fixed subset of the training images. The
run writes a JSON record, prints how many steps and seconds each optimizer
needed to reach the best loss SGD reached, and plots the curves (PNG, when
matplotlib is installed).

Defaults (tuned on Fashion-MNIST, batch 512): SGD learning rate 2e-3
(momentum 0.9; at 3000 steps 1e-3 reaches 221.2 and 4e-3 stalls near 384,
against 217.1); Adam 1e-3; K-FAC with regular momentum 0.9 and the original's
settings for this task: learning rate 0.01, damping 0.03, covariances from
the identity, decay 0.95, updated every step, inverses every 10 steps; K-FAC
with the quadratic model and Levenberg-Marquardt damping starting at 0.03,
warm-started covariances (see `OptimizerSpec`), covariance decay 0.9,
covariances every 2 steps and inverses every 5 steps. The schedule flags,
when given, set both.
A K-FAC step costs a few SGD steps here (the preconditioning and covariance
products are as large as the network's forward and backward passes at this
batch size), so K-FAC gains time where it saves more steps than that: the
quadratic model reaches SGD's 3000-step loss in about 55 steps. The tuned
comparison with grids over learning rates and dampings is
`bench/autoencoder.py` (`make bench`; its results are in the README).

Run:
  python -m kfac.examples.autoencoder_mnist --quick          # `make demo`
  python -m kfac.examples.autoencoder_mnist --optimizers=sgd,kfac_qmodel
  python -m kfac.examples.autoencoder_mnist --quick --noauto_register  # by hand
"""

import dataclasses
import functools
import math
import os
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags

from kfac.examples import _cli
from kfac.examples import _health_plot
from kfac.examples import _tensorboard
from kfac.examples import _training
from kfac.examples import comparison
from kfac.examples import comparison_training
from kfac.examples import mnist

# Re-exported: the benchmarks and tests use them from here.
from kfac.examples.comparison_training import OPTIMIZER_KINDS
from kfac.examples.comparison_training import OptimizerSpec
from kfac.examples.comparison_training import Trainer  # noqa: F401
from kfac.examples.comparison_training import TrainingGraph

# Hidden layer sizes of the paper's autoencoder; the output layer has as many
# units as the input has pixels. Layer CODE_LAYER (the 30 units) is linear.
LAYER_SIZES = (1000, 500, 250, 30, 250, 500, 1000)
CODE_LAYER = 3
REFERENCE = comparison.REFERENCE
DEFAULT_OUTPUT_DIR = os.path.join("runs", "autoencoder")
RECORD_FILE = "autoencoder_mnist.json"
PLOT_FILE = "autoencoder_mnist.png"
HEALTH_PLOT_FILE = "autoencoder_mnist_health.png"
# Fake data: smooth images of FAKE_RANK latent factors (an autoencoder can
# learn them, unlike uniform noise).
FAKE_RANK = 8


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What every run of one comparison shares."""

    batch_size: int = 512
    max_steps: Optional[int] = 1000
    max_seconds: Optional[float] = None
    eval_every: int = 50
    seed: int = 0
    layer_sizes: Tuple[int, ...] = LAYER_SIZES
    code_layer: int = CODE_LAYER
    auto_register: bool = False


# ---------------------------------------------------------------- data


def make_fake_images(
    num_examples: int, input_size: int = 784, seed: int = 0
) -> np.ndarray:
    """Images with structure: `sigmoid(3 z B)`, `z ~ N(0, I_8)`, fixed random `B`.

    Returns float32 `[num_examples, input_size]` grey levels in (0, 1).
    """
    rng = np.random.RandomState(seed)
    basis = rng.randn(FAKE_RANK, input_size) / math.sqrt(FAKE_RANK)
    latent = rng.randn(num_examples, FAKE_RANK)
    return (1.0 / (1.0 + np.exp(-3.0 * latent @ basis))).astype(np.float32)


def load_images(
    data_dir: Optional[str], use_fake_data: bool = False, num_fake_examples: int = 10000
) -> Tuple[np.ndarray, str]:
    """Training images `[N, 784]` in [0, 1] and a description of the source."""
    if use_fake_data:
        description = "fake (%d examples)" % num_fake_examples
        return make_fake_images(num_fake_examples), description
    images, _ = mnist.load_mnist_arrays(data_dir, "train")
    description = os.path.abspath(data_dir or mnist.DEFAULT_DATA_DIR)
    return images.reshape([len(images), -1]).astype(np.float32), description


# ---------------------------------------------------------------- model


def initial_weights(
    input_size: int, layer_sizes: Sequence[int] = LAYER_SIZES, seed: int = 0
) -> List[Tuple[np.ndarray, np.ndarray]]:
    """`(kernel, bias)` per layer, the last layer mapping back to `input_size`.

    Kernels are Glorot-uniform (`U(±sqrt(6 / (fan_in + fan_out)))`), biases
    zero; drawn from numpy with `seed`, so every optimizer starts from the same point.
    """
    rng = np.random.RandomState(seed)
    sizes = [input_size] + list(layer_sizes) + [input_size]
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
        weights.append((kernel, np.zeros([fan_out], np.float32)))
    return weights


@dataclasses.dataclass
class Autoencoder:
    """The graph pieces of one autoencoder.

    `params[i]` is layer i's `(kernel, bias)`; `layer_inputs[i]` and
    `preactivations[i]` are what K-FAC registers for it; `logits` are the
    last pre-activations; `loss` is `bernoulli_loss(logits, inputs)`.
    """

    inputs: tf.Tensor
    params: List[Tuple[tf.Variable, tf.Variable]]
    layer_inputs: List[tf.Tensor]
    preactivations: List[tf.Tensor]
    logits: tf.Tensor
    loss: tf.Tensor
    code_layer: int

    def loss_fn(self, inputs: tf.Tensor) -> tf.Tensor:
        """The loss on other `inputs` with the same parameters (no registration)."""
        return bernoulli_loss(forward(self.params, inputs, self.code_layer)[2], inputs)


def forward(params, inputs: tf.Tensor, code_layer: int = CODE_LAYER):
    """Runs the layers; returns `(layer_inputs, preactivations, logits)`.

    Layer i computes `s_i = a_i W_i + b_i`; `a_{i+1} = tanh(s_i)`, except that
    the code layer and the last layer (the logits) are linear.
    """
    layer_inputs, preactivations = [], []
    activations = inputs
    for index, (kernel, bias) in enumerate(params):
        layer_inputs.append(activations)
        pre = tf.matmul(activations, kernel) + bias
        preactivations.append(pre)
        linear = index == code_layer or index == len(params) - 1
        activations = pre if linear else tf.tanh(pre)
    return layer_inputs, preactivations, preactivations[-1]


def bernoulli_loss(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """`mean_b Σ_pixels −[x log σ(z) + (1 − x) log(1 − σ(z))]` (targets x in [0, 1])."""
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.reduce_mean(tf.reduce_sum(per_pixel, axis=1))


def build_autoencoder(
    inputs: tf.Tensor,
    weights,
    code_layer: int = CODE_LAYER,
    layer_collection=None,
    seed: Optional[int] = None,
    register_layers: bool = True,
) -> Autoencoder:
    """Creates the variables (from numpy `weights`), the forward pass and the loss.

    With a `layer_collection`, registers every layer with
    `register_fully_connected((kernel, bias), layer input, pre-activation)` and
    the logits with `register_multi_bernoulli_predictive_distribution` (the
    model's predictive distribution; `targets=inputs`, so `total_loss()` is
    the summed loss and `"empirical"` estimation works too). With
    `register_layers=False` it registers the predictive distribution only
    (the layers are left to `layer_collection.auto_register_layers()`).
    """
    params = []
    with tf.variable_scope("autoencoder"):
        for index, (kernel, bias) in enumerate(weights):
            with tf.variable_scope("fc_%d" % index):
                params.append(
                    (
                        tf.get_variable("kernel", initializer=kernel),
                        tf.get_variable("bias", initializer=bias),
                    )
                )
    layer_inputs, preactivations, logits = forward(params, inputs, code_layer)
    model = Autoencoder(
        inputs,
        params,
        layer_inputs,
        preactivations,
        logits,
        bernoulli_loss(logits, inputs),
        code_layer,
    )
    if layer_collection is not None:
        layers = zip(params, layer_inputs, preactivations) if register_layers else ()
        for layer_params, layer_input, pre in layers:
            layer_collection.register_fully_connected(layer_params, layer_input, pre)
        layer_collection.register_multi_bernoulli_predictive_distribution(
            logits, seed=seed, targets=inputs
        )
    return model


# ---------------------------------------------------------------- training


def build_training_graph(
    spec: OptimizerSpec, settings: TrainSettings, input_size: int, periodic: bool = True
) -> TrainingGraph:
    """Builds the model (`initial_weights(..., settings.seed)`) and `spec`'s ops.

    K-FAC's layers: `build_autoencoder`'s hand registrations, or with
    `settings.auto_register` `auto_register_layers()` once the model is built.

    K-FAC: with `periodic`, a `PeriodicInvCovUpdateKfacOpt` whose training op
    does everything; without, a `KfacOptimizer` and its separate covariance
    and inverse update ops (used to time them one by one).
    """
    weights = initial_weights(input_size, settings.layer_sizes, settings.seed)

    def build_model(inputs, layer_collection):
        model = build_autoencoder(
            inputs,
            weights,
            settings.code_layer,
            layer_collection,
            seed=settings.seed,
            register_layers=not settings.auto_register,
        )
        if layer_collection is not None and settings.auto_register:
            _training.auto_register_layers(layer_collection)
        return model

    return comparison_training.build_training_graph(
        spec, settings, input_size, build_model, periodic
    )


def train_one(
    spec: OptimizerSpec,
    settings: TrainSettings,
    train_images: np.ndarray,
    eval_images: np.ndarray,
    progress: Optional[comparison.Progress] = None,
    logdir: Optional[str] = None,
) -> Dict:
    """Trains `spec` on this autoencoder; returns the run's record.

    See `comparison_training.train_one`: `name`, `config`, `evals` (`{"step",
    "seconds", "loss"}` each), `steps`, `seconds`, `final_loss`, `diverged`,
    K-FAC's `health`; TensorBoard events in `<logdir>/<name>` with `logdir`.
    """
    return comparison_training.train_one(
        build_training_graph, spec, settings, train_images, eval_images, progress,
        logdir,
    )


# ---------------------------------------------------------------- comparison


def compare(
    specs: Sequence[OptimizerSpec],
    settings: TrainSettings,
    train_images: np.ndarray,
    eval_images: np.ndarray,
    record_path: str,
    data: str = "",
    progress: Optional[comparison.Progress] = None,
    logdir: Optional[str] = None,
) -> Dict:
    """Trains every spec (`train_one`), writing the JSON record to `record_path`.

    The record (`comparison_training.new_record`, rewritten after each run)
    holds `settings`, `data`, `eval_size`, `environment`, `runs` (one
    `train_one` record each) and, when a run named REFERENCE has a finite
    loss, `target` (its best loss) and `table` (`target_table` rows).
    """
    os.makedirs(os.path.dirname(record_path) or ".", exist_ok=True)
    result = comparison_training.new_record(settings, data, eval_images)
    comparison_training.train_all(
        functools.partial(train_one, logdir=logdir),
        specs,
        lambda spec: settings,
        train_images,
        eval_images,
        result,
        record_path,
        progress,
    )
    comparison_training.add_reference_target(result, record_path)
    return result


# ---------------------------------------------------------------- command line

# Defaults of the full run and of `--quick` (the short `make demo` version).
# Tuned on Fashion-MNIST with batch 512 (see the module docstring for the table).
DEFAULTS = dict(
    max_steps=None,
    max_seconds=900.0,
    eval_every=50,
    eval_size=10000,
    sgd_lr=0.002,
    adam_lr=0.001,
    kfac_lr=0.01,
    kfac_damping=0.03,
    qmodel_damping=0.03,
    inv_update_every=5,
    cov_update_every=2,
    cov_ema_decay=0.9,
)
QUICK_DEFAULTS = dict(max_seconds=60.0, eval_every=10, eval_size=2000)
# K-FAC with regular momentum: the original's schedule for this task
# (inverses every 10 steps, covariances every step, decay 0.95), unless the
# flags say otherwise.
REGULAR_DEFAULTS = dict(DEFAULTS, inv_update_every=10, cov_update_every=1,
                        cov_ema_decay=0.95)


# (type, name, default, help); a None default means DEFAULTS or QUICK_DEFAULTS.
FLAGS_TABLE = (
    ("string", "data_dir", mnist.DEFAULT_DATA_DIR, "MNIST-format folder."),
    ("bool", "use_fake_data", False, "Train on generated images instead."),
    ("integer", "batch_size", 512, "Mini-batch size."),
    ("integer", "max_steps", None, "Steps per optimizer (default: no limit)."),
    ("float", "max_seconds", None, "Training seconds per optimizer."),
    ("integer", "eval_every", None, "Evaluate every this many steps."),
    ("integer", "eval_size", None, "Images in the fixed evaluation subset."),
    ("list", "optimizers", list(OPTIMIZER_KINDS), "Optimizers to run, in order."),
    ("string", "output_dir", DEFAULT_OUTPUT_DIR, "Where the JSON record and PNG go."),
    ("float", "sgd_lr", None, "SGD learning rate (momentum 0.9)."),
    ("float", "adam_lr", None, "Adam learning rate."),
    ("float", "kfac_lr", None, "K-FAC learning rate (regular momentum 0.9)."),
    ("float", "kfac_damping", None, "K-FAC damping (fixed)."),
    ("float", "qmodel_damping", None, "Initial damping of K-FAC with qmodel."),
    ("integer", "inv_update_every", None, "K-FAC inverse update interval (steps)."),
    ("integer", "cov_update_every", None, "K-FAC covariance update interval (steps)."),
    ("float", "cov_ema_decay", None, "K-FAC covariance moving-average decay."),
    ("list", "layer_sizes", [str(size) for size in LAYER_SIZES], "Hidden layer sizes."),
    ("integer", "code_layer", CODE_LAYER, "Index of the linear code layer."),
    ("integer", "seed", 0, "Seed of the weights, batch order and K-FAC sampling."),
    ("bool", "quick", False, "A short run: a few minutes on 2 CPU cores."),
    _cli.AUTO_REGISTER_FLAG,
    _tensorboard.LOGDIR_FLAG,
)


def define_flags(flag_values=flags.FLAGS):
    """Defines FLAGS_TABLE in `flag_values` (a flag already defined is left alone)."""
    comparison.define_flags(FLAGS_TABLE, flag_values)


def _flag(flag_values, name):
    """The flag's value if given, else the quick or full default."""
    return _cli.flag_or_default(flag_values, name, DEFAULTS, QUICK_DEFAULTS)


def specs_from_flags(flag_values) -> List[OptimizerSpec]:
    """The OptimizerSpecs `--optimizers` asks for, with the flags' hyperparameters."""
    schedule = ("inv_update_every", "cov_update_every", "cov_ema_decay")
    kfac_options = {name: _flag(flag_values, name) for name in schedule}
    regular_options = {
        name: _cli.flag_or_default(flag_values, name, REGULAR_DEFAULTS, QUICK_DEFAULTS)
        for name in schedule
    }
    make = {
        "sgd": lambda: OptimizerSpec("sgd", _flag(flag_values, "sgd_lr")),
        "adam": lambda: OptimizerSpec("adam", _flag(flag_values, "adam_lr")),
        "kfac": lambda: OptimizerSpec(
            "kfac",
            _flag(flag_values, "kfac_lr"),
            damping=_flag(flag_values, "kfac_damping"),
            # Debiased first-batch statistics are rank-deficient: with a fixed
            # small damping the first regular steps would explode.
            **dict(regular_options, warm_start_covariances=False),
        ),
        "kfac_qmodel": lambda: OptimizerSpec(
            "kfac_qmodel",
            1.0,
            momentum=0.0,
            damping=_flag(flag_values, "qmodel_damping"),
            **kfac_options,
        ),
    }
    unknown = [name for name in flag_values.optimizers if name not in make]
    if unknown:
        raise ValueError(
            "--optimizers: unknown {}; expected names among {}.".format(
                unknown, ",".join(OPTIMIZER_KINDS)
            )
        )
    return [make[name]() for name in flag_values.optimizers]


def settings_from_flags(flag_values) -> TrainSettings:
    return TrainSettings(
        batch_size=flag_values.batch_size,
        max_steps=_flag(flag_values, "max_steps"),
        max_seconds=_flag(flag_values, "max_seconds"),
        eval_every=_flag(flag_values, "eval_every"),
        seed=flag_values.seed,
        layer_sizes=tuple(int(size) for size in flag_values.layer_sizes),
        code_layer=flag_values.code_layer,
        auto_register=flag_values.auto_register,
    )


def prepare_data(
    data_dir: Optional[str],
    use_fake_data: bool,
    eval_size: int,
    batch_size: int,
    seed: int,
    fallback_to_fake: bool = False,
):
    """`(train_images, eval_images, description)`.

    The evaluation subset is `evaluation_subset(train_images, eval_size, seed + 2)`.
    With `fallback_to_fake`, a missing `data_dir` means generated images
    (with a note) instead of an error.
    """
    if (
        fallback_to_fake
        and not use_fake_data
        and not os.path.isdir(data_dir or mnist.DEFAULT_DATA_DIR)
    ):
        print(
            "note: %s is missing (apt-get install %s); using generated images."
            % (data_dir or mnist.DEFAULT_DATA_DIR, mnist.DEBIAN_PACKAGE)
        )
        use_fake_data = True
    train_images, source = load_images(
        data_dir, use_fake_data, num_fake_examples=max(4 * batch_size, eval_size)
    )
    return (
        train_images,
        comparison.evaluation_subset(train_images, eval_size, seed + 2),
        source,
    )


def data_from_flags(flag_values):
    """`prepare_data` as the flags say (an explicit --data_dir must exist)."""
    return prepare_data(
        flag_values.data_dir,
        flag_values.use_fake_data,
        _flag(flag_values, "eval_size"),
        flag_values.batch_size,
        flag_values.seed,
        fallback_to_fake=not flag_values["data_dir"].present,
    )


def report(result: Dict, output_dir: str):
    """Prints the time-to-target table and writes the plot."""
    if "table" in result:
        print("\nSteps and training seconds to reach the best SGD loss:\n")
        print(comparison.format_table(result["table"], result["target"]))
    else:
        print("No finite %s loss to compare with (add it to --optimizers)." % REFERENCE)
    path = os.path.join(output_dir, PLOT_FILE)
    if comparison.plot_records(
        result["runs"], path, result.get("target"), log_y=True
    ):
        print("Plot: %s" % path)
    path = os.path.join(output_dir, HEALTH_PLOT_FILE)
    if _health_plot.plot_health(result["runs"], path):
        print("Curvature health: %s" % path)
    print("Record: %s" % os.path.join(output_dir, RECORD_FILE))


def run_from_flags(flag_values=flags.FLAGS) -> Dict:
    """Runs the comparison the flags describe, prints the report; returns the record."""
    settings = settings_from_flags(flag_values)
    specs = specs_from_flags(flag_values)
    train_images, eval_images, source = data_from_flags(flag_values)
    print(
        "Deep autoencoder on %d images from %s; loss evaluated on %d of them.\n%s"
        % (len(train_images), source, len(eval_images), settings)
    )
    result = compare(
        specs,
        settings,
        train_images,
        eval_images,
        os.path.join(flag_values.output_dir, RECORD_FILE),
        data=source,
        progress=comparison.Progress(
            max_steps=settings.max_steps, max_seconds=settings.max_seconds
        ),
        logdir=_tensorboard.run_logdir(flag_values.logdir, "autoencoder_mnist"),
    )
    report(result, flag_values.output_dir)
    return result


# `app.run` entry point: `run_from_flags` (returns None, the exit status).
main = _cli.record_main(run_from_flags)


if __name__ == "__main__":
    _cli.run(define_flags, main, verbosity=tf.logging.ERROR)
