r"""A 4-layer tanh MLP on MNIST-format data, trained with K-FAC.

Port of the original `kfac/examples/mlp.py` (and `mlp_mnist_main.py`): one
machine, several towers on one machine, or `tf.estimator` (TensorFlow <= 2.15).
Layers are built from `tf.get_variable` and core ops instead of `tf.layers`
(gone from TF 2.16), with the same variable names (`fc_<id>/kernel`,
`fc_<id>/bias`) and initializers.

Every training function keeps the original signature, returns the final
mini-batch accuracy as the original did, and takes extra keyword arguments to
bound and observe training: `num_steps` stops early, `history` (a list)
receives one `StepStats(step, loss, accuracy)` per step, and the optimizer's
hyperparameters can be changed. `auto_register=True` (the command line's
default; `--noauto_register` for the hand registrations) registers the layers
with `LayerCollection.auto_register_layers()` once the model is built;
`build_model` then registers the loss only.

Run:
  python -m kfac.examples.mlp --data_dir=/usr/share/datasets/fashion-mnist
  python -m kfac.examples.mlp --num_towers=2 --use_fake_data --num_epochs=5
  python -m kfac.examples.mlp --noauto_register   # the hand registrations
"""

import functools
from typing import List
from typing import Optional
from typing import Tuple

import tensorflow.compat.v1 as tf
from absl import flags

import kfac
from kfac.examples import _cli
from kfac.examples import _tensorboard
from kfac.examples import _training
from kfac.examples import mnist

# Re-exported under their original names (benchmarks and tests use them here).
from kfac.examples._training import StepStats
from kfac.examples._training import build_towers  # noqa: F401
from kfac.examples._training import classification_loss_and_accuracy
from kfac.examples._training import fc_layer
from kfac.examples._training import make_kfac_optimizer
from kfac.examples._training import run_training_loop  # noqa: F401
from kfac.examples._training import train_model

NUM_LABELS = _training.NUM_LABELS
BATCH_SIZE = 64
# The original trained with learning rate 2e-5 (halved every 10k steps),
# damping 1e-4 and momentum 0.99, which barely moves the loss in an epoch.
# With these defaults, one epoch of Fashion-MNIST brings the mini-batch loss
# from 7.7 to about 0.5 (mini-batch accuracy about 80%).
LEARNING_RATE = 0.01
LEARNING_RATE_HALF_LIFE = 10000
DAMPING = 0.01
MOMENTUM = 0.9
COV_EMA_DECAY = 0.95
INVERT_EVERY = _training.INVERT_EVERY
LOG_EVERY = _training.LOG_EVERY


def build_model(
    examples: tf.Tensor,
    labels: tf.Tensor,
    num_labels: int,
    layer_collection: "kfac.LayerCollection",
    register_layers: bool = True,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Builds the MLP 784-128-64-32-`num_labels` and registers it with K-FAC.

    Every layer goes to `layer_collection.register_fully_connected` (params,
    inputs, pre-activations); the logits define the model's predictive
    distribution (`register_categorical_predictive_distribution(logits,
    name="logits")`, so towers built under a reusing variable scope append to
    the same loss).

    Args:
      examples: float32 `[B, 784]`.
      labels: int64 `[B]`.
      num_labels: number of classes.
      layer_collection: the `kfac.LayerCollection` to register with.
      register_layers: False: register the loss only (the layers are left to
        `layer_collection.auto_register_layers()`).

    Returns:
      `(loss, accuracy)`: mean cross-entropy and accuracy of this batch.
    """
    pre0, act0, params0 = fc_layer(layer_id=0, inputs=examples, output_size=128)
    pre1, act1, params1 = fc_layer(layer_id=1, inputs=act0, output_size=64)
    pre2, act2, params2 = fc_layer(layer_id=2, inputs=act1, output_size=32)
    logits, _, params3 = fc_layer(layer_id=3, inputs=act2, output_size=num_labels)
    loss, accuracy = classification_loss_and_accuracy(logits, labels)

    if register_layers:
        layer_collection.register_fully_connected(params0, examples, pre0)
        layer_collection.register_fully_connected(params1, act0, pre1)
        layer_collection.register_fully_connected(params2, act1, pre2)
        layer_collection.register_fully_connected(params3, act2, logits)
    layer_collection.register_categorical_predictive_distribution(logits, name="logits")
    return loss, accuracy


def _make_kfac_optimizer(
    layer_collection, global_step, learning_rate, damping, momentum, cov_ema_decay
) -> "kfac.KfacOptimizer":
    """K-FAC with the learning rate halved every `LEARNING_RATE_HALF_LIFE` steps."""
    decayed_learning_rate = tf.train.exponential_decay(
        learning_rate, global_step, LEARNING_RATE_HALF_LIFE, 0.5, staircase=True
    )
    return make_kfac_optimizer(
        layer_collection, decayed_learning_rate, damping, momentum, cov_ema_decay
    )


def minimize(
    loss: tf.Tensor,
    accuracy: tf.Tensor,
    layer_collection: "kfac.LayerCollection",
    session_config: Optional[tf.ConfigProto] = None,
    *,
    learning_rate: float = LEARNING_RATE,
    damping: float = DAMPING,
    cov_ema_decay: float = COV_EMA_DECAY,
    momentum: float = MOMENTUM,
    invert_every: int = INVERT_EVERY,
    num_steps: Optional[int] = None,
    history: Optional[List[StepStats]] = None,
    log_every: int = LOG_EVERY,
    logdir: Optional[str] = None,
) -> Optional[float]:
    """Trains with K-FAC in a `MonitoredTrainingSession` until the data run out.

    Each step runs the training op and the covariance update; the inverses
    are recomputed after step 0 and then every `invert_every` steps (they are
    the expensive part).

    Args:
      loss, accuracy: scalar tensors of the model (mean over the batch).
      layer_collection: the collection the model was registered with.
      session_config: `tf.ConfigProto` for the session (e.g. CPU devices for
        towers).
      learning_rate: initial learning rate, halved every 10000 steps.
      damping, momentum: K-FAC's damping and momentum.
      cov_ema_decay: decay of the moving averages of K-FAC's covariance
        estimates (they start at the identity, so a smaller decay forgets
        that start sooner).
      invert_every: steps between inverse updates.
      num_steps: stop after this many steps (None: run until the input ends).
      history: optional list that receives one `StepStats` per step.
      log_every: steps between log lines (0: no logging).
      logdir: folder of the TensorBoard logs (losses every step, K-FAC's
        curvature summaries every `log_every` steps); None writes none.

    Returns:
      The accuracy of the last mini-batch.
    """
    global_step = tf.train.get_or_create_global_step()
    optimizer = _make_kfac_optimizer(
        layer_collection, global_step, learning_rate, damping, momentum, cov_ema_decay
    )
    loop_options = dict(
        num_steps=num_steps, history=history, log_every=log_every, logdir=logdir
    )
    return _training.minimize_in_monitored_session(
        loss, accuracy, optimizer, session_config, invert_every, **loop_options
    )


# `train_model` for this model: `(data_dir, num_epochs, use_fake_data,
# batch_size, **kwargs)`.
_train_mlp = functools.partial(train_model, build_model, minimize, flatten_images=True)


def train_mnist(
    data_dir: Optional[str],
    num_epochs: int,
    use_fake_data: bool = False,
    *,
    batch_size: int = BATCH_SIZE,
    **minimize_kwargs,
) -> Optional[float]:
    """Trains the MLP on the training split of `data_dir` (batches of 64).

    Args:
      data_dir: MNIST-format folder (None: Fashion-MNIST's Debian folder).
      num_epochs: passes over the data.
      use_fake_data: train on `4·batch_size` random examples instead.
      batch_size: examples per batch.
      **minimize_kwargs: `auto_register` (True: the layers are registered by
        `auto_register_layers()`; default False: by `build_model`), the rest
        forwarded to `minimize` (`num_steps`, `history`, `learning_rate`, ...).

    Returns:
      The accuracy of the last mini-batch.
    """
    return _train_mlp(
        data_dir, num_epochs, use_fake_data, batch_size, **minimize_kwargs
    )


def train_mnist_multitower(
    data_dir: Optional[str],
    num_epochs: int,
    num_towers: int,
    use_fake_data: bool = False,
    *,
    batch_size: int = BATCH_SIZE,
    **minimize_kwargs,
) -> Optional[float]:
    """Data-parallel training: one tower per CPU device, one shared K-FAC.

    A batch of `batch_size·num_towers` examples is split evenly; tower `i` is built on
    `/cpu:i` under a variable scope that reuses the first tower's variables,
    and registers its layers and loss with the same `LayerCollection` (each
    re-registration adds a tower to the existing blocks). The session gets
    `num_towers` CPU devices.

    Args:
      data_dir, num_epochs, use_fake_data: as in `train_mnist`.
      num_towers: number of towers (and CPU devices).
      batch_size: examples per tower and batch.
      **minimize_kwargs: `auto_register` (as in `train_mnist`: after all
        towers are built), the rest forwarded to `minimize`.

    Returns:
      The accuracy (averaged over towers) of the last mini-batch.
    """
    return _train_mlp(
        data_dir,
        num_epochs,
        use_fake_data,
        batch_size,
        num_towers=num_towers,
        **minimize_kwargs,
    )


def _require_estimator():
    """`tf.estimator`, or a clear error on TensorFlow versions without it."""
    try:
        return tf.estimator
    except AttributeError:
        raise RuntimeError(
            "train_mnist_estimator needs tf.estimator, which TensorFlow removed in "
            "2.16 (this is {}); use TensorFlow 2.15 or train_mnist.".format(
                tf.__version__
            )
        ) from None


class _HistoryHook(tf.train.SessionRunHook):
    """Records `StepStats` of every training step into a list."""

    def __init__(self, loss, accuracy, history):
        self._fetches = [loss, accuracy]
        self._history = history

    def before_run(self, run_context):
        return tf.train.SessionRunArgs(self._fetches)

    def after_run(self, run_context, run_values):
        loss_value, accuracy_value = run_values.results
        self._history.append(
            StepStats(len(self._history), float(loss_value), float(accuracy_value))
        )


def train_mnist_estimator(
    data_dir: Optional[str],
    num_epochs: int,
    use_fake_data: bool = False,
    *,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    damping: float = DAMPING,
    cov_ema_decay: float = COV_EMA_DECAY,
    momentum: float = MOMENTUM,
    num_steps: Optional[int] = None,
    history: Optional[List[StepStats]] = None,
    model_dir: Optional[str] = None,
    tf_random_seed: Optional[int] = None,
    auto_register: bool = False,
    logdir: Optional[str] = None,
) -> Optional[float]:
    """Trains the MLP with `tf.estimator.Estimator` (TensorFlow <= 2.15 only).

    The `model_fn` schedules K-FAC's updates with a `kfac.KfacHook` (the
    covariance update with every training step, the inverses after step 0
    and every `INVERT_EVERY` steps, a health report every `LOG_EVERY` steps)
    and adds the optimizer's curvature summaries, which the Estimator writes
    to `model_dir` every `save_summary_steps` (`tensorboard --logdir
    <model_dir>`).

    Args:
      data_dir, num_epochs, use_fake_data, batch_size: as in `train_mnist`.
      learning_rate, damping, momentum, cov_ema_decay: as in `minimize`.
      num_steps: stop after this many steps (None: until the input ends).
      history: optional list that receives one `StepStats` per step.
      model_dir: checkpoint folder (None: a fresh temporary folder).
      tf_random_seed: graph-level seed (initializers, shuffling).
      auto_register: `model_fn` registers the layers with
        `auto_register_layers()` (False: `build_model`'s hand registrations).
      logdir: the `model_dir` when `model_dir` is None (the command line's
        TensorBoard folder).

    Returns:
      The accuracy of the last mini-batch.

    Raises:
      RuntimeError: `tf.estimator` does not exist in this TensorFlow.
    """
    estimator_lib = _require_estimator()
    history = [] if history is None else history

    def input_fn():
        return mnist.load_mnist(
            data_dir,
            num_epochs=num_epochs,
            batch_size=batch_size,
            flatten_images=True,
            use_fake_data=use_fake_data,
        )

    def model_fn(features, labels, mode, params):
        del params  # Unused.
        if mode != estimator_lib.ModeKeys.TRAIN:
            raise NotImplementedError("Only training is implemented, not %s." % mode)
        layer_collection = kfac.LayerCollection()
        loss, accuracy = build_model(
            features,
            labels,
            NUM_LABELS,
            layer_collection,
            register_layers=not auto_register,
        )
        if auto_register:
            _training.auto_register_layers(layer_collection)

        global_step = tf.train.get_or_create_global_step()
        optimizer = _make_kfac_optimizer(
            layer_collection,
            global_step,
            learning_rate,
            damping,
            momentum,
            cov_ema_decay,
        )
        # The hook makes K-FAC's ops before minimize: every step runs the
        # covariance update with the training op, the inverses are refreshed
        # after step 0 and every INVERT_EVERY steps, and a health line is
        # logged every LOG_EVERY steps (logger "kfac.health").
        kfac_hook = kfac.KfacHook(
            optimizer, invert_every=INVERT_EVERY, report_every=LOG_EVERY
        )
        train_op = optimizer.minimize(loss, global_step=global_step)
        # Written to model_dir by the Estimator every save_summary_steps.
        optimizer.make_summary_ops()
        hooks = [_HistoryHook(loss, accuracy, history), kfac_hook]
        return estimator_lib.EstimatorSpec(
            mode=mode, loss=loss, train_op=train_op, training_hooks=hooks
        )

    run_config = estimator_lib.RunConfig(
        model_dir=model_dir if model_dir is not None else logdir,
        tf_random_seed=tf_random_seed,
        log_step_count_steps=LOG_EVERY,
    )
    estimator = estimator_lib.Estimator(model_fn=model_fn, config=run_config)
    estimator.train(input_fn=input_fn, steps=num_steps)
    return history[-1].accuracy if history else None


FLAGS_TABLE = (
    _cli.DATA_DIR_FLAG,
    (
        "integer",
        "num_towers",
        1,
        "Number of towers (CPU devices) for multi-tower training.",
    ),
    ("bool", "use_estimator", False, "Train with tf.estimator (TensorFlow <= 2.15)."),
    ("integer", "num_epochs", 200, "Passes over the data."),
    _cli.FAKE_DATA_FLAG,
    _cli.NUM_STEPS_FLAG,
    _cli.AUTO_REGISTER_FLAG,
    _tensorboard.LOGDIR_FLAG,
    (
        "integer",
        "batch_size",
        BATCH_SIZE,
        "Examples per batch (per tower with --num_towers).",
    ),
)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Command-line flags of `main` (`FLAGS_TABLE`)."""
    _cli.define_flags(FLAGS_TABLE, flag_values)


def main(
    argv: List[str], flag_values: flags.FlagValues = flags.FLAGS
) -> Optional[float]:
    """Trains as the flags say and prints the final mini-batch accuracy."""
    del argv  # Unused.
    common = dict(
        use_fake_data=flag_values.use_fake_data,
        batch_size=flag_values.batch_size,
        num_steps=flag_values.num_steps,
        auto_register=flag_values.auto_register,
        logdir=_tensorboard.run_logdir(flag_values.logdir, "mlp"),
    )
    if flag_values.use_estimator and flag_values.num_towers != 1:
        raise ValueError(
            "--use_estimator supports one tower only, got --num_towers=%d."
            % flag_values.num_towers
        )
    # A fresh graph: the examples build graph-mode code, and a script starts
    # in eager mode.
    with tf.Graph().as_default():
        if flag_values.use_estimator:
            accuracy = train_mnist_estimator(
                flag_values.data_dir, flag_values.num_epochs, **common
            )
        elif flag_values.num_towers > 1:
            accuracy = train_mnist_multitower(
                flag_values.data_dir,
                flag_values.num_epochs,
                flag_values.num_towers,
                **common,
            )
        else:
            accuracy = train_mnist(
                flag_values.data_dir, flag_values.num_epochs, **common
            )
    print("final mini-batch accuracy: %s" % accuracy)
    return accuracy


if __name__ == "__main__":
    _cli.run(define_flags, main)
