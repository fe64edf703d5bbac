"""What the classification examples share: layers, loss, K-FAC wiring, loops.

The MLP and ConvNet examples read MNIST-format batches from a queue and train
in a `MonitoredTrainingSession` (`train_model`, `train_in_monitored_session`,
`run_training_loop`); the RNN and embedding examples feed numpy batches and
start K-FAC's factors from their first batch (`run_warm_started_loop`).
"""

import collections
import contextlib
from typing import Callable
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow.compat.v1 as tf

import kfac
from kfac.examples import _progress
from kfac.examples import _tensorboard
from kfac.examples import mnist

NUM_LABELS = 10
INVERT_EVERY = 100
LOG_EVERY = 100
# A distributed task's log line (parsed by the cluster fault tests).
GLOBAL_STEP_LOG_LINE = "step: %d | global_step: %d | loss: %f | accuracy: %f"

StepStats = collections.namedtuple("StepStats", ["step", "loss", "accuracy"])
TrainResult = collections.namedtuple(
    "TrainResult", ["test_accuracy", "test_loss", "train_losses"]
)


def check_choice(name: str, value, choices) -> None:
    """ValueError naming `name` unless `value` is among `choices` (shown as given)."""
    if value not in choices:
        raise ValueError("{} must be one of {}, got {!r}.".format(name, choices, value))


# ---------------------------------------------------------------- layers and loss


def fc_layer(layer_id: int, inputs: tf.Tensor, output_size: int):
    """A dense tanh layer `act = tanh(inputs @ kernel + bias)`.

    Variables `fc_<layer_id>/kernel` (`[in, output_size]`, standard normal
    initializer, as `tf.layers.Dense` with `tf.random_normal_initializer()` in
    the original) and `fc_<layer_id>/bias` (zeros).

    Returns:
      `(preactivations, activations, (kernel, bias))`; the pre-activations are
      what K-FAC registers as the layer's outputs.
    """
    input_size = int(inputs.shape[-1])
    with tf.variable_scope("fc_%d" % layer_id):
        kernel = tf.get_variable(
            "kernel",
            [input_size, output_size],
            initializer=tf.random_normal_initializer(),
        )
        bias = tf.get_variable(
            "bias", [output_size], initializer=tf.zeros_initializer()
        )
        preactivations = tf.nn.bias_add(tf.matmul(inputs, kernel), bias)
        activations = tf.nn.tanh(preactivations)
    return preactivations, activations, (kernel, bias)


def output_layer(inputs: tf.Tensor, initial_weights: np.ndarray):
    """Logits `inputs @ weights + bias` `[B, classes]`.

    Variables `output/weights` (from numpy `initial_weights` `[in, classes]`)
    and `output/bias` (zeros).

    Returns:
      `(logits, (weights, bias))`.
    """
    num_classes = initial_weights.shape[1]
    with tf.variable_scope("output"):
        weights = tf.get_variable(
            "weights", initializer=tf.constant(initial_weights.astype(np.float32))
        )
        bias = tf.get_variable(
            "bias", [num_classes], initializer=tf.zeros_initializer()
        )
        logits = tf.nn.bias_add(tf.matmul(inputs, weights), bias)
    return logits, (weights, bias)


def classification_loss_and_accuracy(
    logits: tf.Tensor, labels: tf.Tensor
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Mean softmax cross-entropy and the fraction of correct arg-max labels."""
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
    correct = tf.equal(labels, tf.argmax(logits, axis=1))
    accuracy = tf.reduce_mean(tf.cast(correct, dtype=tf.float32))
    return loss, accuracy


# ---------------------------------------------------------------- K-FAC wiring


def log_registration(layer_collection: "kfac.LayerCollection") -> None:
    """Logs `layer_collection.summary()`: one line per block and per loss."""
    tf.logging.info("K-FAC registration:\n%s", layer_collection.summary())


def make_kfac_optimizer(
    layer_collection: "kfac.LayerCollection",
    learning_rate,
    damping,
    momentum: float,
    cov_ema_decay,
    norm_constraint: Optional[float] = None,
) -> "kfac.KfacOptimizer":
    """The examples' `kfac.KfacOptimizer` (regular momentum) with these settings;
    logs the collection's summary first."""
    log_registration(layer_collection)
    return kfac.KfacOptimizer(
        learning_rate=learning_rate,
        cov_ema_decay=cov_ema_decay,
        damping=damping,
        layer_collection=layer_collection,
        momentum=momentum,
        norm_constraint=norm_constraint,
    )


def kfac_step_ops(
    optimizer: "kfac.KfacOptimizer", loss: tf.Tensor, global_step: tf.Tensor
) -> Tuple[List[tf.Operation], tf.Operation]:
    """`([train_op, cov_update_op], inv_update_op)` of `optimizer` on `loss`.

    The update ops are made explicitly (`make_ops_and_vars`) instead of through
    the deprecated convenience properties.
    """
    _, cov_update_op, _, inv_update_op, _, _ = optimizer.make_ops_and_vars()
    train_op = optimizer.minimize(loss, global_step=global_step)
    return [train_op, cov_update_op], inv_update_op


def _param_names(params) -> str:
    """`"fc_0/kernel, fc_0/bias"`: the variable names of a registration's params."""
    variables = params if isinstance(params, (list, tuple)) else [params]
    return ", ".join(variable.op.name for variable in variables)


def auto_register_layers(layer_collection: "kfac.LayerCollection") -> list:
    """Registers the layers of the built model (all towers) with K-FAC.

    Calls `layer_collection.auto_register_layers()` (the losses must be
    registered already) and logs one line per registration: parameters,
    layer kind, matched pattern, uses per tower, towers, and the reason of
    a generic fallback.

    Returns:
      The `Registration`s that `auto_register_layers` returns.
    """
    registrations = layer_collection.auto_register_layers()
    for registration in registrations:
        tf.logging.info(
            "auto_register: %s -> %s (%s), %d use(s) per tower, %d tower(s)%s",
            _param_names(registration.params),
            registration.kind,
            ", ".join(sorted(set(registration.patterns))) or "no pattern",
            registration.uses_per_tower,
            registration.num_towers,
            "" if registration.reason is None else ": " + registration.reason,
        )
    return registrations


# ---------------------------------------------------------------- queue-fed models


def build_towers(
    model_fn: Callable[..., Tuple[tf.Tensor, tf.Tensor]],
    examples: tf.Tensor,
    labels: tf.Tensor,
    num_towers: int,
    layer_collection: "kfac.LayerCollection",
    register_layers: bool = True,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Builds `model_fn` once per tower on `/cpu:<tower>` with shared variables.

    `register_layers` goes to every `model_fn` call (False: the towers
    register their losses only).

    Returns:
      `(loss, accuracy)` averaged over the towers.
    """
    tower_examples = tf.split(examples, num_towers)
    tower_labels = tf.split(labels, num_towers)
    tower_results = []
    for tower_id in range(num_towers):
        with tf.device("/cpu:%d" % tower_id), tf.name_scope("tower%d" % tower_id):
            with tf.variable_scope(tf.get_variable_scope(), reuse=(tower_id > 0)):
                tower_results.append(
                    model_fn(
                        tower_examples[tower_id],
                        tower_labels[tower_id],
                        NUM_LABELS,
                        layer_collection,
                        register_layers=register_layers,
                    )
                )
    losses, accuracies = zip(*tower_results)
    return tf.reduce_mean(losses), tf.reduce_mean(accuracies)


def train_model(
    model_fn: Callable[..., Tuple[tf.Tensor, tf.Tensor]],
    minimize_fn: Callable[..., Optional[float]],
    data_dir: Optional[str],
    num_epochs: Optional[int],
    use_fake_data: bool,
    batch_size: int,
    *,
    flatten_images: bool,
    num_towers: Optional[int] = None,
    device=None,
    auto_register: bool = False,
    **minimize_kwargs,
) -> Optional[float]:
    """Loads the data, builds `model_fn` with a new `LayerCollection`, trains.

    Reads batches of `batch_size` examples from `data_dir` (`mnist.load_mnist`),
    builds `(loss, accuracy) = model_fn(examples, labels, NUM_LABELS,
    layer_collection, register_layers=not auto_register)` and returns
    `minimize_fn(loss, accuracy, layer_collection, **minimize_kwargs)`: what
    the `train_*` functions of the MLP and ConvNet examples share.

    Args:
      model_fn, minimize_fn: the model and its training (see above).
      data_dir, num_epochs, use_fake_data: as in `mnist.load_mnist`.
      batch_size: examples per batch (per tower with `num_towers`).
      flatten_images: `[B, 784]` examples instead of `[B, 28, 28, 1]`.
      num_towers: None: one model. Else batches of `batch_size·num_towers`
        examples are split across towers on `/cpu:<i>` (`build_towers`) and
        the session gets `num_towers` CPU devices (`session_config`).
      device: device (or device function) of the model's ops, e.g. a
        `tf.train.replica_device_setter` (one model only).
      auto_register: the model registers its loss only, and
        `auto_register_layers` registers the layers once the whole model (all
        towers) is built (False: the model's hand registrations).
      **minimize_kwargs: forwarded to `minimize_fn`.
    """
    total_batch_size = batch_size * (num_towers or 1)
    if num_towers is not None:
        tf.logging.info(
            "Using batch_size = %d = %d towers * %d tower batch size.",
            total_batch_size,
            num_towers,
            batch_size,
        )
    examples, labels = mnist.load_mnist(
        data_dir,
        num_epochs=num_epochs,
        batch_size=total_batch_size,
        flatten_images=flatten_images,
        use_fake_data=use_fake_data,
    )
    layer_collection = kfac.LayerCollection()
    register_layers = not auto_register
    if num_towers is None:
        with tf.device(device) if device is not None else contextlib.nullcontext():
            loss, accuracy = model_fn(
                examples,
                labels,
                NUM_LABELS,
                layer_collection,
                register_layers=register_layers,
            )
            if auto_register:
                auto_register_layers(layer_collection)
    else:
        loss, accuracy = build_towers(
            model_fn, examples, labels, num_towers, layer_collection, register_layers
        )
        if auto_register:
            auto_register_layers(layer_collection)
        minimize_kwargs["session_config"] = tf.ConfigProto(
            allow_soft_placement=False, device_count={"CPU": num_towers}
        )
    return minimize_fn(loss, accuracy, layer_collection, **minimize_kwargs)


def run_training_loop(
    sess: tf.train.MonitoredSession,
    step_fetches,
    loss: tf.Tensor,
    accuracy: tf.Tensor,
    periodic_op: Optional[tf.Operation] = None,
    period: int = INVERT_EVERY,
    num_steps: Optional[int] = None,
    history: Optional[List[StepStats]] = None,
    log_every: int = LOG_EVERY,
    global_step: Optional[tf.Tensor] = None,
    show_progress: bool = True,
    log: Optional[_tensorboard.TrainingLog] = None,
) -> Optional[float]:
    """Runs `step_fetches` until the session stops or `num_steps` are done.

    Each step runs `step_fetches` (fetches, or a function of `sess` that
    returns the fetches of this step) together with `loss` and `accuracy`; after
    steps 0, `period`, `2·period`, ... it also runs `periodic_op` (K-FAC's
    inverse update: refreshing it right after the first covariance update
    replaces the identity initial inverses at once).

    With `global_step` (a distributed job), each log line also gives the
    global step read in the same run (its value before that run's update).
    With `show_progress`, a `_progress.ProgressBar` (on stderr) follows the steps;
    with `log`, every step's loss and accuracy (and the curvature summaries)
    go to its TensorBoard event file.

    Returns:
      The accuracy of the last step (None if no step ran).
    """
    final_accuracy = None
    loss_value = None
    step = 0
    bar = _progress.ProgressBar("train", total=num_steps) if show_progress else None
    extra = [] if global_step is None else [global_step]
    while not sess.should_stop() and (num_steps is None or step < num_steps):
        try:
            fetches = step_fetches(sess) if callable(step_fetches) else step_fetches
            loss_value, accuracy_value, _, *global_value = sess.run(
                [loss, accuracy, fetches] + extra
            )
        except tf.errors.OutOfRangeError:
            break  # The input pipeline is exhausted.
        # A hook may have asked to stop after this step (then no more runs).
        if periodic_op is not None and step % period == 0 and not sess.should_stop():
            sess.run(periodic_op)
        final_accuracy = float(accuracy_value)
        if history is not None:
            history.append(StepStats(step, float(loss_value), final_accuracy))
        if log_every and step % log_every == 0:
            if global_value:
                tf.logging.info(
                    GLOBAL_STEP_LOG_LINE,
                    step,
                    global_value[0],
                    loss_value,
                    accuracy_value,
                )
            else:
                tf.logging.info(
                    "step: %d | loss: %f | accuracy: %f",
                    step,
                    loss_value,
                    accuracy_value,
                )
        if log is not None:
            log.write(step, {"loss": loss_value, "accuracy": accuracy_value},
                      sess.run)
        step += 1
        if bar is not None:
            bar.update(step, float(loss_value))
    if bar is not None:
        bar.close(step, None if loss_value is None else float(loss_value))
    return final_accuracy


def minimize_in_monitored_session(
    loss: tf.Tensor,
    accuracy: tf.Tensor,
    optimizer: tf.train.Optimizer,
    session_config: Optional[tf.ConfigProto],
    invert_every: int,
    logdir: Optional[str] = None,
    **loop_kwargs,
) -> Optional[float]:
    """Trains `loss` with `optimizer` in a new `MonitoredTrainingSession`.

    A `kfac.KfacOptimizer` runs its covariance update with every step and
    its inverse update after step 0 and every `invert_every` steps
    (`kfac_step_ops`); another optimizer runs its `minimize` op alone.
    `loop_kwargs` (`num_steps`, `history`, `log_every`) go to
    `run_training_loop`. With `logdir`, TensorBoard logs are written there
    (`_tensorboard.TrainingLog`).

    Returns:
      The accuracy of the last mini-batch.
    """
    global_step = tf.train.get_or_create_global_step()
    if isinstance(optimizer, kfac.KfacOptimizer):
        step_fetches, inv_update_op = kfac_step_ops(optimizer, loss, global_step)
    else:
        step_fetches = optimizer.minimize(loss, global_step=global_step)
        inv_update_op = None
    log = _tensorboard.training_log(logdir, optimizer, summary_every=LOG_EVERY)
    tf.logging.info("Starting training.")
    with tf.train.MonitoredTrainingSession(config=session_config) as sess:
        accuracy_value = run_training_loop(
            sess,
            step_fetches,
            loss,
            accuracy,
            periodic_op=inv_update_op,
            period=invert_every,
            log=log,
            **loop_kwargs,
        )
    if log is not None:
        log.close()
        tf.logging.info("TensorBoard logs: %s", log.logdir)
    return accuracy_value


# ---------------------------------------------------------------- numpy-fed models


def run_warm_started_loop(
    sess: tf.Session,
    loss: tf.Tensor,
    train_op: tf.Operation,
    step_feeds: Iterable[Dict],
    num_steps: int,
    kfac_ops: Optional[Tuple[tf.Operation, tf.Operation, tf.Tensor]] = None,
    warm_start_feed: Optional[Dict] = None,
    cov_ema_decay: float = 0.95,
    invert_every: int = 5,
    log_every: int = 0,
    show_progress: bool = True,
    log: Optional[_tensorboard.TrainingLog] = None,
) -> List[float]:
    """Runs `num_steps` training steps fed by `step_feeds`; returns their losses.

    With `kfac_ops = (cov_update_op, inv_update_op, cov_decay)` (`cov_decay`
    the placeholder of the covariance moving-average decay), one covariance
    update with decay 0 on `warm_start_feed` and one inverse update first
    replace the identity initial factors; then step `n` runs the training op
    and the covariance update with decay `min(cov_ema_decay, (n + 1) / (n +
    2))` (a running mean turning into the moving average), and the inverses
    are refreshed after every `invert_every`-th step. With `show_progress`, a
    `_progress.ProgressBar` (on stderr) follows the steps; with `log`, every
    step's loss (and the curvature summaries) go to its event file.

    Returns:
      The mini-batch loss of every step (`num_steps` floats).
    """
    if kfac_ops is not None:
        cov_update_op, inv_update_op, cov_decay = kfac_ops
        sess.run(cov_update_op, {**warm_start_feed, cov_decay: 0.0})
        sess.run(inv_update_op)
    train_losses = []
    bar = _progress.ProgressBar("train", total=num_steps) if show_progress else None
    for step, feed in zip(range(num_steps), step_feeds):
        fetches = [loss, train_op]
        if kfac_ops is not None:
            feed = {**feed, cov_decay: min(cov_ema_decay, (step + 1.0) / (step + 2.0))}
            fetches.append(cov_update_op)
        loss_value = sess.run(fetches, feed)[0]
        if kfac_ops is not None and (step + 1) % invert_every == 0:
            sess.run(inv_update_op)
        train_losses.append(float(loss_value))
        if log_every and step % log_every == 0:
            tf.logging.info("step %d: loss %.4f", step, loss_value)
        if log is not None:
            log.write(step, {"loss": loss_value}, sess.run)
        if bar is not None:
            bar.update(step + 1, float(loss_value))
    if bar is not None:
        bar.close(len(train_losses), train_losses[-1] if train_losses else None)
    return train_losses
