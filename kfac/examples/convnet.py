r"""A small ConvNet on MNIST-format data, trained with K-FAC (or SGD+momentum).

Port of the original `kfac/examples/convnet.py` and its three mains (single
machine, multi-tower, distributed). The model is conv(5x5, 16) - max-pool(3, 2)
- conv(5x5, 16) - max-pool(3, 2) - linear(10); the two conv layers are
registered with `register_conv2d` (Kronecker factors of Grosse & Martens 2016)
and the linear layer with `register_fully_connected`.

Distributed training (`train_mnist_distributed`) splits the worker tasks into
three roles as the original did (`_distributed`): gradients, covariance
updates, inverse updates. Every training function keeps the original
signature, returns the final mini-batch accuracy, and takes extra keyword
arguments: `optimizer` ("kfac" or "sgd", for comparison), `learning_rate`,
`damping`, `momentum`, `invert_every`, `num_steps` (stop early; distributed:
every task stops at that global step), `history` (list of `StepStats`),
`auto_register` (the layers registered by `auto_register_layers()` once all
towers are built; the command line's default, `--noauto_register` to not).

Run:
  python -m kfac.examples.convnet --data_dir=/usr/share/datasets/fashion-mnist
  python -m kfac.examples.convnet --num_towers=2 --use_fake_data --num_epochs=5
  python -m kfac.examples.convnet --optimizer=sgd --learning_rate=0.01
  python -m kfac.examples.convnet --noauto_register   # the hand registrations
"""

import functools
from typing import List
from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags

import kfac
from kfac.examples import _cli
from kfac.examples import _distributed
from kfac.examples import _tensorboard
from kfac.examples import _training
from kfac.examples._distributed import GRADIENT_TASK_FRACTION  # noqa: F401
from kfac.examples._distributed import StopAtGlobalStepHook  # noqa: F401
from kfac.examples._training import StepStats

# The roles of a distributed job's tasks, under their original names.
_is_gradient_task = _distributed.is_gradient_task
_is_cov_update_task = _distributed.is_cov_update_task
_is_inv_update_task = _distributed.is_inv_update_task
_num_gradient_tasks = _distributed.num_gradient_tasks

NUM_LABELS = _training.NUM_LABELS
BATCH_SIZE = 128
# The original used learning rate 1e-4, damping 1e-3, momentum 0.9, with
# which the loss hardly moves in an epoch. With these defaults and batches of
# 64, the Fashion-MNIST training loss falls from 2.3 to about 0.9 in 60 steps
# (SGD with momentum 0.9 and learning rate 0.01: about 1.5; 0.03 diverges).
# The norm constraint (KL clipping, Ba et al. 2017) keeps the first steps
# after the covariances warm up from blowing up.
LEARNING_RATE = 0.1
DAMPING = 0.01
MOMENTUM = 0.9
COV_EMA_DECAY = 0.95
NORM_CONSTRAINT = 0.01
INVERT_EVERY = 100
LOG_EVERY = 100
OPTIMIZERS = ("kfac", "sgd")


def conv_layer(layer_id: int, inputs: tf.Tensor, kernel_size: int, out_channels: int):
    """A stride-1 SAME convolution followed by ReLU.

    Variables `conv_<layer_id>/kernel` (`[k, k, in, out]`, normal with
    stddev 0.01) and `conv_<layer_id>/bias` (zeros), as the original's
    `tf.layers.Conv2D`.

    Returns:
      `(preactivations, activations, (kernel, bias))`.
    """
    in_channels = int(inputs.shape[-1])
    with tf.variable_scope("conv_%d" % layer_id):
        kernel = tf.get_variable(
            "kernel",
            [kernel_size, kernel_size, in_channels, out_channels],
            initializer=tf.random_normal_initializer(stddev=0.01),
        )
        bias = tf.get_variable(
            "bias", [out_channels], initializer=tf.zeros_initializer()
        )
        convolved = tf.nn.conv2d(inputs, kernel, strides=[1, 1, 1, 1], padding="SAME")
        preactivations = tf.nn.bias_add(convolved, bias)
        activations = tf.nn.relu(preactivations)
    return preactivations, activations, (kernel, bias)


def max_pool_layer(layer_id: int, inputs: tf.Tensor, kernel_size: int, stride: int):
    """SAME max-pooling; the result is the op `pool_<layer_id>/pool`."""
    with tf.variable_scope("pool_%d" % layer_id):
        return tf.nn.max_pool(
            inputs,
            ksize=[1, kernel_size, kernel_size, 1],
            strides=[1, stride, stride, 1],
            padding="SAME",
            name="pool",
        )


def linear_layer(layer_id: int, inputs: tf.Tensor, output_size: int):
    """An affine layer (variables `fc_<layer_id>/...`).

    Returns:
      `(preactivations, (kernel, bias))`.
    """
    preactivations, _, params = _training.fc_layer(layer_id, inputs, output_size)
    return preactivations, params


def build_model(
    examples: tf.Tensor,
    labels: tf.Tensor,
    num_labels: int,
    layer_collection: "kfac.LayerCollection",
    register_layers: bool = True,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Builds the ConvNet and registers its 3 layers and its loss with K-FAC.

    Args:
      examples: float32 `[B, H, W, C]` (`[B, 28, 28, 1]` for MNIST).
      labels: int64 `[B]`.
      num_labels: number of classes.
      layer_collection: the `kfac.LayerCollection` to register with.
      register_layers: False: register the loss only (the layers are left to
        `layer_collection.auto_register_layers()`).

    Returns:
      `(loss, accuracy)`: mean cross-entropy and accuracy of this batch.
    """
    pre0, act0, params0 = conv_layer(
        layer_id=0, inputs=examples, kernel_size=5, out_channels=16
    )
    act1 = max_pool_layer(layer_id=1, inputs=act0, kernel_size=3, stride=2)
    pre2, act2, params2 = conv_layer(
        layer_id=2, inputs=act1, kernel_size=5, out_channels=16
    )
    act3 = max_pool_layer(layer_id=3, inputs=act2, kernel_size=3, stride=2)
    flat_act3 = tf.reshape(act3, shape=[-1, int(np.prod(act3.shape[1:4]))])
    logits, params4 = linear_layer(layer_id=4, inputs=flat_act3, output_size=num_labels)
    loss, accuracy = _training.classification_loss_and_accuracy(logits, labels)

    tf.summary.scalar("loss", loss)
    tf.summary.scalar("accuracy", accuracy)

    if register_layers:
        layer_collection.register_conv2d(params0, (1, 1, 1, 1), "SAME", examples, pre0)
        layer_collection.register_conv2d(params2, (1, 1, 1, 1), "SAME", act1, pre2)
        layer_collection.register_fully_connected(params4, flat_act3, logits)
    layer_collection.register_categorical_predictive_distribution(logits, name="logits")
    return loss, accuracy


def minimize_loss_single_machine(
    loss: tf.Tensor,
    accuracy: tf.Tensor,
    layer_collection: "kfac.LayerCollection",
    session_config: Optional[tf.ConfigProto] = None,
    *,
    optimizer: str = "kfac",
    learning_rate: float = LEARNING_RATE,
    damping: float = DAMPING,
    cov_ema_decay: float = COV_EMA_DECAY,
    norm_constraint: Optional[float] = NORM_CONSTRAINT,
    momentum: float = MOMENTUM,
    invert_every: int = INVERT_EVERY,
    num_steps: Optional[int] = None,
    history: Optional[List[StepStats]] = None,
    log_every: int = LOG_EVERY,
    logdir: Optional[str] = None,
) -> Optional[float]:
    """Trains on one machine in a `MonitoredTrainingSession`.

    With `optimizer="kfac"`, each step runs the training op and K-FAC's
    covariance update; the inverses are recomputed after step 0 and then
    every `invert_every` steps. With `optimizer="sgd"`, plain
    `tf.train.MomentumOptimizer(learning_rate, momentum)` on the same model
    (the layer collection is then unused).

    Args:
      loss, accuracy: scalar tensors of the model.
      layer_collection: the collection the model was registered with.
      session_config: `tf.ConfigProto` for the session.
      optimizer: `"kfac"` or `"sgd"`.
      learning_rate, momentum: of either optimizer.
      damping, cov_ema_decay: K-FAC's damping and the moving-average decay
        of its covariance estimates.
      norm_constraint: K-FAC's bound on the squared Fisher norm of each
        update (KL clipping, Ba et al. 2017); None: no bound.
      invert_every: steps between K-FAC inverse updates.
      num_steps: stop after this many steps (None: until the input ends).
      history: optional list that receives one `StepStats` per step.
      log_every: steps between log lines (0: no logging).
      logdir: TensorBoard folder (losses; K-FAC's summaries); None: no logs.

    Returns:
      The accuracy of the last mini-batch.

    Raises:
      ValueError: unknown `optimizer`.
    """
    _training.check_choice("optimizer", optimizer, OPTIMIZERS)
    if optimizer == "kfac":
        chosen_optimizer = _training.make_kfac_optimizer(
            layer_collection,
            learning_rate,
            damping,
            momentum,
            cov_ema_decay,
            norm_constraint,
        )
    else:
        chosen_optimizer = tf.train.MomentumOptimizer(learning_rate, momentum)
    loop_options = dict(num_steps=num_steps, history=history, log_every=log_every)
    return _training.minimize_in_monitored_session(
        loss, accuracy, chosen_optimizer, session_config, invert_every, logdir,
        **loop_options,
    )


def minimize_loss_distributed(
    task_id: int,
    num_worker_tasks: int,
    num_ps_tasks: int,
    master: str,
    checkpoint_dir: Optional[str],
    loss: tf.Tensor,
    accuracy: tf.Tensor,
    layer_collection: "kfac.LayerCollection",
    *,
    learning_rate: float = LEARNING_RATE,
    damping: float = DAMPING,
    cov_ema_decay: float = COV_EMA_DECAY,
    norm_constraint: Optional[float] = NORM_CONSTRAINT,
    momentum: float = MOMENTUM,
    invert_every: int = INVERT_EVERY,
    num_steps: Optional[int] = None,
    history: Optional[List[StepStats]] = None,
    log_every: int = LOG_EVERY,
    save_checkpoint_steps: Optional[int] = None,
) -> Optional[float]:
    """Trains with K-FAC as one worker task of a (possibly) distributed job.

    Variables live on the parameter servers (`replica_device_setter`). The
    task's role follows from `task_id` (`_distributed.task_ops`): gradient
    tasks run the `SyncReplicasOptimizer`-wrapped K-FAC training op,
    covariance tasks `cov_update_op`, the inverse task the next op of an
    `OpQueue` of inverse updates. Task 0 is the chief. With fewer than 3
    tasks, every task runs the training op and the covariance update, and the
    chief refreshes all inverses every `invert_every` steps (a fix: the
    original never updated K-FAC's statistics then).

    Args:
      task_id: index of this worker task.
      num_worker_tasks: number of worker tasks.
      num_ps_tasks: number of parameter-server tasks (0: variables local).
      master: session target (`""` for in-process).
      checkpoint_dir: where the chief saves checkpoints and summaries (None:
        nowhere).
      loss, accuracy, layer_collection: the model.
      learning_rate, damping, momentum, cov_ema_decay, norm_constraint:
        K-FAC's hyperparameters, as in `minimize_loss_single_machine`.
      invert_every: steps between the chief's inverse updates (fewer than 3
        tasks).
      num_steps: every task stops once the global step has reached this
        (`StopAtGlobalStepHook`), so no gradient task waits for another that
        has already stopped. None: until the input ends.
      history: optional list that receives one `StepStats` per step.
      log_every: steps between log lines (0: no logging); each line gives
        this task's step, the global step and the loss.
      save_checkpoint_steps: the chief saves a checkpoint every this many
        global steps (None: every 10 minutes, TF's default). A restarted
        chief restores the newest one: weights, K-FAC's moving averages and
        inverses, the velocities and the global step.

    Returns:
      The accuracy of the last mini-batch this task saw.

    Raises:
      ValueError: `task_id` is outside `[0, num_worker_tasks)`.
    """
    if not 0 <= task_id < num_worker_tasks:
        raise ValueError(
            "task_id must lie in [0, num_worker_tasks={}), got {}.".format(
                num_worker_tasks, task_id
            )
        )
    loop_options = dict(num_steps=num_steps, history=history, log_every=log_every)
    return _distributed.minimize_distributed(
        loss,
        accuracy,
        lambda: _training.make_kfac_optimizer(
            layer_collection,
            learning_rate,
            damping,
            momentum,
            cov_ema_decay,
            norm_constraint,
        ),
        (task_id, num_worker_tasks, num_ps_tasks, master),
        checkpoint_dir,
        invert_every=invert_every,
        save_checkpoint_steps=save_checkpoint_steps,
        **loop_options,
    )


# `train_model` for this model: `(minimize_fn, data_dir, num_epochs,
# use_fake_data, batch_size, **kwargs)`.
_train_convnet = functools.partial(
    _training.train_model, build_model, flatten_images=False
)


def train_mnist_single_machine(
    data_dir: Optional[str],
    num_epochs: int,
    use_fake_data: bool = False,
    *,
    batch_size: int = BATCH_SIZE,
    **minimize_kwargs,
) -> Optional[float]:
    """Trains the ConvNet on one machine (batches of 128).

    Args:
      data_dir: MNIST-format folder (None: Fashion-MNIST's Debian folder).
      num_epochs, batch_size: passes over the data, examples per batch.
      use_fake_data: `4·batch_size` random examples instead of `data_dir`.
      **minimize_kwargs: `auto_register` (True: the layers are registered by
        `auto_register_layers()`; default False: by `build_model`), the rest
        forwarded to `minimize_loss_single_machine` (`optimizer`,
        `num_steps`, `history`, `learning_rate`, ...).

    Returns:
      The accuracy of the last mini-batch.
    """
    return _train_convnet(
        minimize_loss_single_machine,
        data_dir,
        num_epochs,
        use_fake_data,
        batch_size,
        **minimize_kwargs,
    )


def train_mnist_multitower(
    data_dir: Optional[str],
    num_epochs: int,
    num_towers: int,
    use_fake_data: bool = True,
    *,
    batch_size: int = BATCH_SIZE,
    **minimize_kwargs,
) -> Optional[float]:
    """Data-parallel training with one tower per CPU device (`/cpu:<i>`).

    A batch of `batch_size·num_towers` examples is split evenly across towers that
    share variables and one `LayerCollection`; the session gets `num_towers`
    CPU devices. (`use_fake_data` defaults to True, as in the original.)
    Keyword arguments as in `train_mnist_single_machine`.

    Returns:
      The accuracy (averaged over towers) of the last mini-batch.
    """
    return _train_convnet(
        minimize_loss_single_machine,
        data_dir,
        num_epochs,
        use_fake_data,
        batch_size,
        num_towers=num_towers,
        **minimize_kwargs,
    )


def train_mnist_distributed(
    task_id: int,
    num_worker_tasks: int,
    num_ps_tasks: int,
    master: str,
    data_dir: Optional[str],
    num_epochs: int,
    use_fake_data: bool = False,
    *,
    batch_size: int = BATCH_SIZE,
    checkpoint_dir: Optional[str] = None,
    **minimize_kwargs,
) -> Optional[float]:
    """Trains the ConvNet as one worker task of a distributed job.

    Args:
      task_id, num_worker_tasks, num_ps_tasks, master: the cluster, as in
        `minimize_loss_distributed`.
      data_dir, num_epochs, use_fake_data, batch_size: the data, as in
        `train_mnist_single_machine`.
      checkpoint_dir: where the chief saves checkpoints (None: nowhere). The
        original used `<data_dir>/kfac`, next to its downloaded data; the
        data folder here is usually read-only system data, so this is a
        separate argument.
      **minimize_kwargs: `auto_register` (as in `train_mnist_single_machine`),
        the rest forwarded to `minimize_loss_distributed`.

    Returns:
      The accuracy of the last mini-batch this task saw.
    """
    minimize_fn = functools.partial(
        minimize_loss_distributed,
        task_id,
        num_worker_tasks,
        num_ps_tasks,
        master,
        checkpoint_dir,
    )
    return _train_convnet(
        minimize_fn,
        data_dir,
        num_epochs,
        use_fake_data,
        batch_size,
        device=tf.train.replica_device_setter(num_ps_tasks),
        **minimize_kwargs,
    )


FLAGS_TABLE = (
    _cli.DATA_DIR_FLAG,
    ("integer", "num_epochs", 1, "Passes over the data."),
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
    ("integer", "num_towers", 1, "Towers (CPU devices) for multi-tower training."),
    (
        "enum",
        "optimizer",
        "kfac",
        "K-FAC, or SGD with momentum for comparison (single machine and towers).",
        OPTIMIZERS,
    ),
    ("float", "learning_rate", LEARNING_RATE, "Learning rate."),
    ("float", "damping", DAMPING, "K-FAC damping."),
    ("bool", "distributed", False, "Run as one worker task of a distributed job."),
    ("integer", "task", 0, "Worker task index (distributed)."),
    ("integer", "num_worker_tasks", 1, "Number of worker tasks (distributed)."),
    ("integer", "num_ps_tasks", 0, "Number of parameter-server tasks (distributed)."),
    ("string", "master", "", "Session target of this task (distributed)."),
)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Command-line flags of `main` (`FLAGS_TABLE`)."""
    _cli.define_flags(FLAGS_TABLE, flag_values)


def main(
    argv: List[str], flag_values: flags.FlagValues = flags.FLAGS
) -> Optional[float]:
    """Trains as the flags say and prints the final mini-batch accuracy."""
    del argv  # Unused.
    data_dir, num_epochs = flag_values.data_dir, flag_values.num_epochs
    common = dict(
        use_fake_data=flag_values.use_fake_data,
        batch_size=flag_values.batch_size,
        num_steps=flag_values.num_steps,
        learning_rate=flag_values.learning_rate,
        damping=flag_values.damping,
        auto_register=flag_values.auto_register,
    )
    if flag_values.distributed and flag_values.optimizer != "kfac":
        raise ValueError("--distributed supports --optimizer=kfac only.")
    if not flag_values.distributed:  # (A distributed job's tasks write no logs.)
        common["logdir"] = _tensorboard.run_logdir(flag_values.logdir, "convnet")
    # A fresh graph: the examples build graph-mode code, and a script starts
    # in eager mode.
    with tf.Graph().as_default():
        if flag_values.distributed:
            accuracy = train_mnist_distributed(
                flag_values.task,
                flag_values.num_worker_tasks,
                flag_values.num_ps_tasks,
                flag_values.master,
                data_dir,
                num_epochs,
                **common,
            )
        elif flag_values.num_towers > 1:
            accuracy = train_mnist_multitower(
                data_dir,
                num_epochs,
                flag_values.num_towers,
                optimizer=flag_values.optimizer,
                **common,
            )
        else:
            accuracy = train_mnist_single_machine(
                data_dir, num_epochs, optimizer=flag_values.optimizer, **common
            )
    print("final mini-batch accuracy: %s" % accuracy)
    return accuracy


if __name__ == "__main__":
    _cli.run(define_flags, main)
