r"""A small ConvNet on MNIST-format data, trained with K-FAC (or SGD+momentum).

Port of the original `kfac/examples/convnet.py` and its three mains (single
machine, multi-tower, distributed). The model is conv(5x5, 16) - max-pool(3, 2)
- conv(5x5, 16) - max-pool(3, 2) - linear(10); the two conv layers are
registered with `register_conv2d` (Kronecker factors of Grosse & Martens 2016)
and the linear layer with `register_fully_connected`.

Distributed training (`train_mnist_distributed`) splits the worker tasks into
three roles, as in the original: about 60% compute gradients and update the
weights through `tf.train.SyncReplicasOptimizer`, the others (but the last)
run K-FAC's covariance updates, and the last task runs the inverse updates one
at a time in a shuffled order shared by all workers (`kfac.op_queue.OpQueue`).
With fewer than 3 tasks every task computes gradients and also updates the
covariances, and the chief updates the inverses.

Every training function keeps the original signature, returns the final
mini-batch accuracy, and takes extra keyword arguments: `optimizer` ("kfac" or
"sgd", for comparison), `learning_rate`, `damping`, `momentum`, `invert_every`,
`num_steps` (stop early; distributed: every task stops at that global step),
`history` (list of per-step `StepStats`).

Run:
  python -m kfac.examples.convnet --data_dir=/usr/share/datasets/fashion-mnist
  python -m kfac.examples.convnet --num_towers=2 --use_fake_data --num_epochs=5
  python -m kfac.examples.convnet --optimizer=sgd --learning_rate=0.01
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
from kfac.examples import mlp

StepStats = mlp.StepStats

NUM_LABELS = 10
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
# Share of the worker tasks that compute gradients in distributed training.
GRADIENT_TASK_FRACTION = 0.6


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
    preactivations, _, params = mlp.fc_layer(layer_id, inputs, output_size)
    return preactivations, params


def build_model(
    examples: tf.Tensor,
    labels: tf.Tensor,
    num_labels: int,
    layer_collection: "kfac.LayerCollection",
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Builds the ConvNet and registers its 3 layers and its loss with K-FAC.

    Args:
      examples: float32 `[B, H, W, C]` (`[B, 28, 28, 1]` for MNIST).
      labels: int64 `[B]`.
      num_labels: number of classes.
      layer_collection: the `kfac.LayerCollection` to register with.

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
    loss, accuracy = mlp.classification_loss_and_accuracy(logits, labels)

    tf.summary.scalar("loss", loss)
    tf.summary.scalar("accuracy", accuracy)

    layer_collection.register_conv2d(params0, (1, 1, 1, 1), "SAME", examples, pre0)
    layer_collection.register_conv2d(params2, (1, 1, 1, 1), "SAME", act1, pre2)
    layer_collection.register_fully_connected(params4, flat_act3, logits)
    layer_collection.register_categorical_predictive_distribution(logits, name="logits")
    return loss, accuracy


def _check_optimizer_name(optimizer: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(
            "optimizer must be one of {}, got {!r}.".format(OPTIMIZERS, optimizer)
        )


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

    Returns:
      The accuracy of the last mini-batch.

    Raises:
      ValueError: unknown `optimizer`.
    """
    _check_optimizer_name(optimizer)
    global_step = tf.train.get_or_create_global_step()
    inv_update_op = None
    if optimizer == "kfac":
        kfac_optimizer = mlp.make_kfac_optimizer(
            layer_collection,
            learning_rate=learning_rate,
            damping=damping,
            momentum=momentum,
            cov_ema_decay=cov_ema_decay,
            norm_constraint=norm_constraint,
        )
        _, cov_update_op, _, inv_update_op, _, _ = kfac_optimizer.make_ops_and_vars()
        train_op = kfac_optimizer.minimize(loss, global_step=global_step)
        step_fetches = [train_op, cov_update_op]
    else:
        sgd_optimizer = tf.train.MomentumOptimizer(learning_rate, momentum)
        step_fetches = sgd_optimizer.minimize(loss, global_step=global_step)

    tf.logging.info("Starting training.")
    with tf.train.MonitoredTrainingSession(config=session_config) as sess:
        return mlp.run_training_loop(
            sess,
            step_fetches,
            loss,
            accuracy,
            periodic_op=inv_update_op,
            period=invert_every,
            num_steps=num_steps,
            history=history,
            log_every=log_every,
        )


def _is_gradient_task(task_id: int, num_tasks: int) -> bool:
    """True if this task computes gradients and updates the weights."""
    if num_tasks < 3:
        return True
    return 0 <= task_id < GRADIENT_TASK_FRACTION * num_tasks


def _is_cov_update_task(task_id: int, num_tasks: int) -> bool:
    """True if this task updates K-FAC's covariance estimates."""
    if num_tasks < 3:
        return False
    return GRADIENT_TASK_FRACTION * num_tasks <= task_id < num_tasks - 1


def _is_inv_update_task(task_id: int, num_tasks: int) -> bool:
    """True if this task updates K-FAC's inverses (the last task)."""
    if num_tasks < 3:
        return False
    return task_id == num_tasks - 1


def _num_gradient_tasks(num_tasks: int) -> int:
    """Number of tasks whose gradients `SyncReplicasOptimizer` aggregates."""
    if num_tasks < 3:
        return num_tasks
    return int(np.ceil(GRADIENT_TASK_FRACTION * num_tasks))


class StopAtGlobalStepHook(tf.train.SessionRunHook):
    """Requests a stop once the global step has reached `last_step`.

    Like `tf.train.StopAtStepHook(last_step=...)`, but the global step is read
    again after every run. StopAtStepHook re-reads it only when the value
    fetched during the run was within one step of `last_step`, so a
    `SyncReplicasOptimizer` worker whose run spanned several global steps
    would start one more step, whose token never comes once the other
    workers have stopped.
    """

    def __init__(self, last_step: int):
        self._last_step = last_step
        self._global_step = None

    def begin(self):
        self._global_step = tf.train.get_global_step()
        if self._global_step is None:
            raise RuntimeError("StopAtGlobalStepHook needs a global step.")

    def after_create_session(self, session, coord):
        # A task (re)started after the job reached its last step stops before
        # its first run: that run would wait for a token no chief hands out.
        if session.run(self._global_step) >= self._last_step:
            coord.request_stop()

    def after_run(self, run_context, run_values):
        del run_values  # Unused.
        if run_context.session.run(self._global_step) >= self._last_step:
            run_context.request_stop()


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
    task's role follows from `task_id` (see the module docstring): gradient
    tasks run the `SyncReplicasOptimizer`-wrapped K-FAC training op,
    covariance tasks run `cov_update_op`, the inverse task runs
    `OpQueue(inv_update_ops).next_op(sess)` each step. Task 0 is the chief.
    With fewer than 3 tasks, every task runs the training op and the
    covariance update, and the chief recomputes all inverses after step 0 and
    every `invert_every` steps (a fix: the original had no task update K-FAC's
    statistics then).

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
    with tf.device(tf.train.replica_device_setter(num_ps_tasks)):
        global_step = tf.train.get_or_create_global_step()
        optimizer = mlp.make_kfac_optimizer(
            layer_collection,
            learning_rate=learning_rate,
            damping=damping,
            momentum=momentum,
            cov_ema_decay=cov_ema_decay,
            norm_constraint=norm_constraint,
        )
        _, cov_update_op, inv_update_ops, inv_update_op, _, _ = (
            optimizer.make_ops_and_vars()
        )
        inv_update_queue = kfac.op_queue.OpQueue(inv_update_ops)
        sync_optimizer = tf.train.SyncReplicasOptimizer(
            opt=optimizer, replicas_to_aggregate=_num_gradient_tasks(num_worker_tasks)
        )
        train_op = sync_optimizer.minimize(loss, global_step=global_step)

    is_chief = task_id == 0
    hooks = [sync_optimizer.make_session_run_hook(is_chief)]
    if num_steps is not None:
        hooks.append(StopAtGlobalStepHook(last_step=num_steps))
    is_gradient_task = _is_gradient_task(task_id, num_worker_tasks)
    is_cov_update_task = _is_cov_update_task(task_id, num_worker_tasks)
    periodic_op = None
    if num_worker_tasks < 3:
        # Every task computes gradients. The original then never updated
        # K-FAC's statistics (plain SGD with momentum); here each task also
        # updates the covariances and the chief refreshes the inverses.
        learning_op = [train_op, cov_update_op]
        periodic_op = inv_update_op if is_chief else None
    else:

        def learning_op(sess):
            if is_gradient_task:
                return train_op
            if is_cov_update_task:
                return cov_update_op
            # An inverse update before any covariance update inverts the
            # identity initialisation: harmless.
            return inv_update_queue.next_op(sess)

    # On a real cluster a session talks to the parameter servers and its own
    # task only, so a worker can (re)start while another task is down or done.
    session_config = (
        tf.ConfigProto(device_filters=["/job:ps", "/job:worker/task:%d" % task_id])
        if master
        else None
    )
    tf.logging.info("Starting training.")
    with tf.train.MonitoredTrainingSession(
        master=master,
        is_chief=is_chief,
        config=session_config,
        checkpoint_dir=checkpoint_dir,
        hooks=hooks,
        stop_grace_period_secs=0,
        save_checkpoint_steps=save_checkpoint_steps,
        save_checkpoint_secs=None if save_checkpoint_steps else 600,
    ) as sess:
        return mlp.run_training_loop(
            sess,
            learning_op,
            loss,
            accuracy,
            periodic_op=periodic_op,
            period=invert_every,
            history=history,
            log_every=log_every,
            global_step=global_step,
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
      num_epochs: passes over the data.
      use_fake_data: train on `4·batch_size` random examples instead.
      batch_size: examples per batch.
      **minimize_kwargs: forwarded to `minimize_loss_single_machine`
        (`optimizer`, `num_steps`, `history`, `learning_rate`, ...).

    Returns:
      The accuracy of the last mini-batch.
    """
    return mlp.train_model(
        build_model,
        minimize_loss_single_machine,
        data_dir,
        num_epochs,
        use_fake_data,
        batch_size,
        flatten_images=False,
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

    Returns:
      The accuracy (averaged over towers) of the last mini-batch.
    """
    return mlp.train_model(
        build_model,
        minimize_loss_single_machine,
        data_dir,
        num_epochs,
        use_fake_data,
        batch_size,
        flatten_images=False,
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
      **minimize_kwargs: forwarded to `minimize_loss_distributed`.

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
    return mlp.train_model(
        build_model,
        minimize_fn,
        data_dir,
        num_epochs,
        use_fake_data,
        batch_size,
        flatten_images=False,
        device=tf.train.replica_device_setter(num_ps_tasks),
        **minimize_kwargs,
    )


FLAGS_TABLE = (
    _cli.DATA_DIR_FLAG,
    ("integer", "num_epochs", 1, "Passes over the data."),
    _cli.FAKE_DATA_FLAG,
    _cli.NUM_STEPS_FLAG,
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
    )
    if flag_values.distributed and flag_values.optimizer != "kfac":
        raise ValueError("--distributed supports --optimizer=kfac only.")
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
