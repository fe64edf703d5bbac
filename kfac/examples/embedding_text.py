r"""A bag-of-tokens text classifier with a `tf.gather` embedding, trained with K-FAC.

The data are generated token sequences (no download): a vocabulary of 1000
tokens with Zipf-like frequencies, each token belonging to one of a few
topics; a sequence of `L` tokens draws most of its tokens from the topic of
its label and the rest from the whole vocabulary. The model

    bag = Σ_j E[ids_j]   (embedding table E: [vocab, dim], rows gathered),
    logits = tanh(bag) @ V + c,

is registered with K-FAC in one of two ways:
* "bag": `register_embedding(E, ids [B, L], bag [B, dim])` — one use whose
  input factor counts the occurrences of each id per example;
* "multi": `register_embedding_multi(E, [ids_j], [E[ids_j]])` — each position
  gathers separately and is one use of the table.
The output layer is registered with `register_fully_connected` and the logits
with `register_categorical_predictive_distribution`. With `auto_register` (the
command line's default; `--noauto_register` for the hand registrations),
`build_model` registers the logits only and
`LayerCollection.auto_register_layers()` finds the same layers.

The gradient of a `tf.gather` arrives as `tf.IndexedSlices`; the embedding
blocks precondition it without densifying the table (the input factor is
diagonal), so `F̂⁻¹ g` touches only the gathered rows.

Run:
  python -m kfac.examples.embedding_text --registration=bag --num_steps=200
  python -m kfac.examples.embedding_text --noauto_register   # hand registrations
"""

import collections
import itertools
from typing import Optional

import numpy as np
import tensorflow.compat.v1 as tf

import kfac
from kfac.examples import _cli
from kfac.examples import _tensorboard
from kfac.examples import _training

VOCAB_SIZE = 1000
EMBEDDING_DIM = 16
SEQUENCE_LENGTH = 8
NUM_CLASSES = 4
BATCH_SIZE = 64
NUM_STEPS = 200
REGISTRATIONS = ("bag", "multi")
LEARNING_RATE = 0.03
DAMPING = 0.01
MOMENTUM = 0.9
COV_EMA_DECAY = 0.95
INVERT_EVERY = 5
LOG_EVERY = 50

TrainResult = _training.TrainResult
Model = collections.namedtuple(
    "Model",
    [
        "ids",  # int32 placeholder [B, L]
        "labels",  # int64 placeholder [B]
        "loss",  # mean cross-entropy
        "accuracy",
        "embeddings",  # the [vocab, dim] table
        "layer_collection",
        "optimizer",  # the KfacOptimizer
        "grads_and_vars",  # from optimizer.compute_gradients(loss)
        "train_op",
        "cov_update_op",
        "inv_update_op",
        "cov_decay",  # scalar placeholder, default cov_ema_decay
    ],
)


def make_generated_data(
    num_train: int = 4096,
    num_test: int = 1024,
    vocab_size: int = VOCAB_SIZE,
    sequence_length: int = SEQUENCE_LENGTH,
    num_classes: int = NUM_CLASSES,
    topic_fraction: float = 0.5,
    seed: int = 0,
):
    """Generated token sequences whose label is the topic most tokens come from.

    Token `v` has frequency `∝ 1/(v + 10)` (Zipf-like: many rare tokens, which
    the diagonal embedding factor gives larger steps) and a fixed random topic.
    Each token of a sequence is, with probability `topic_fraction`, drawn from
    the label's topic (by frequency), else from the whole vocabulary.

    Returns:
      `(train_ids, train_labels, test_ids, test_labels)`: int32
      `[N, sequence_length]` ids and int64 `[N]` labels.
    """
    rng = np.random.RandomState(seed)
    frequencies = 1.0 / (np.arange(vocab_size) + 10.0)
    topics = rng.randint(0, num_classes, vocab_size)
    overall = frequencies / frequencies.sum()
    by_topic = [np.where(topics == c, frequencies, 0.0) for c in range(num_classes)]
    by_topic = [p / p.sum() for p in by_topic]

    def sample(probabilities, shape):
        # Inverse-CDF sampling, vectorised over all positions.
        cumulative = np.cumsum(probabilities)
        draws = rng.rand(*shape) * cumulative[-1]
        return np.minimum(
            np.searchsorted(cumulative, draws, side="right"), vocab_size - 1
        )

    def split(num_examples):
        labels = rng.randint(0, num_classes, num_examples)
        shape = [num_examples, sequence_length]
        from_topic = rng.rand(*shape) < topic_fraction
        ids = sample(overall, shape)
        for label in range(num_classes):
            rows = labels == label
            topic_ids = sample(by_topic[label], [int(rows.sum()), sequence_length])
            ids[rows] = np.where(from_topic[rows], topic_ids, ids[rows])
        return ids.astype(np.int32), labels.astype(np.int64)

    return split(num_train) + split(num_test)


def build_model(
    ids: tf.Tensor,
    labels: tf.Tensor,
    layer_collection: "kfac.LayerCollection",
    registration: str = "bag",
    vocab_size: int = VOCAB_SIZE,
    embedding_dim: int = EMBEDDING_DIM,
    num_classes: int = NUM_CLASSES,
    seed: int = 0,
    register_layers: bool = True,
):
    """Builds the classifier and registers it with `layer_collection`.

    Variables `embedding/table` (`[vocab, dim]`, `N(0, 0.1²)`), `output/weights`
    (`[dim, classes]`, `N(0, 1/dim)`) and `output/bias` (zeros), initialised
    from `np.random.RandomState(seed)`.

    Args:
      ids: int32 `[B, L]` token ids.
      labels: int64 `[B]`.
      layer_collection: the `kfac.LayerCollection` to register with.
      registration: "bag" (`register_embedding` of the summed rows) or "multi"
        (`register_embedding_multi`, one use per position).
      vocab_size, embedding_dim, num_classes: sizes.
      seed: seed of the initial weights.
      register_layers: False: register the logits only (the layers are left
        to `layer_collection.auto_register_layers()`).

    Returns:
      `(loss, accuracy, embeddings)`: mean cross-entropy, accuracy, the table.

    Raises:
      ValueError: unknown `registration`.
    """
    _training.check_choice("registration", registration, list(REGISTRATIONS))
    rng = np.random.RandomState(seed)
    initial_table = 0.1 * rng.randn(vocab_size, embedding_dim)
    initial_weights = rng.randn(embedding_dim, num_classes) / np.sqrt(embedding_dim)
    with tf.variable_scope("embedding"):
        embeddings = tf.get_variable(
            "table", initializer=tf.constant(initial_table.astype(np.float32))
        )
        if registration == "bag":
            bag = tf.reduce_sum(tf.gather(embeddings, ids), axis=1)
        else:
            position_ids = tf.unstack(ids, axis=1)
            # One gather per position: each reads the table, one use each.
            rows = [tf.gather(embeddings, position) for position in position_ids]
            bag = tf.add_n(rows)
    hidden = tf.tanh(bag)
    logits, output_params = _training.output_layer(hidden, initial_weights)
    loss, accuracy = _training.classification_loss_and_accuracy(logits, labels)

    if register_layers:
        if registration == "bag":
            layer_collection.register_embedding(embeddings, ids, bag)
        else:
            layer_collection.register_embedding_multi(embeddings, position_ids, rows)
        layer_collection.register_fully_connected(output_params, hidden, logits)
    layer_collection.register_categorical_predictive_distribution(logits, name="logits")
    return loss, accuracy, embeddings


def build_training_graph(
    sequence_length: int = SEQUENCE_LENGTH,
    registration: str = "bag",
    learning_rate: float = LEARNING_RATE,
    damping: float = DAMPING,
    momentum: float = MOMENTUM,
    cov_ema_decay: float = COV_EMA_DECAY,
    estimation_mode: str = "gradients",
    seed: int = 0,
    auto_register: bool = False,
    **model_kwargs,
) -> Model:
    """Builds the model and its K-FAC training ops in the current graph.

    The step is made explicitly with `compute_gradients` (the table's gradient
    is an `IndexedSlices`) and `apply_gradients`; the covariance decay is a
    placeholder (default `cov_ema_decay`) so the caller can average the first
    updates.

    Args:
      sequence_length: tokens per example.
      registration: "bag" or "multi" (see `build_model`).
      learning_rate, damping, momentum, cov_ema_decay, estimation_mode:
        `KfacOptimizer` arguments.
      seed: seed of the initial weights.
      auto_register: register the layers with `auto_register_layers()`
        instead of `build_model`'s hand registrations.
      **model_kwargs: `vocab_size`, `embedding_dim`, `num_classes`.

    Returns:
      A `Model` with the placeholders, tensors and ops.
    """
    ids = tf.placeholder(tf.int32, [None, sequence_length], name="ids")
    labels = tf.placeholder(tf.int64, [None], name="labels")
    layer_collection = kfac.LayerCollection()
    loss, accuracy, embeddings = build_model(
        ids,
        labels,
        layer_collection,
        registration,
        seed=seed,
        register_layers=not auto_register,
        **model_kwargs,
    )
    if auto_register:
        _training.auto_register_layers(layer_collection)
    _training.log_registration(layer_collection)
    cov_decay = tf.placeholder_with_default(
        tf.constant(cov_ema_decay, tf.float32), [], name="cov_ema_decay"
    )
    optimizer = kfac.KfacOptimizer(
        learning_rate=learning_rate,
        cov_ema_decay=cov_decay,
        damping=damping,
        layer_collection=layer_collection,
        momentum=momentum,
        estimation_mode=estimation_mode,
    )
    _, cov_update_op, _, inv_update_op, _, _ = optimizer.make_ops_and_vars()
    grads_and_vars = optimizer.compute_gradients(loss)
    global_step = tf.train.get_or_create_global_step()
    train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
    return Model(
        ids,
        labels,
        loss,
        accuracy,
        embeddings,
        layer_collection,
        optimizer,
        grads_and_vars,
        train_op,
        cov_update_op,
        inv_update_op,
        cov_decay,
    )


def train(
    registration: str = "bag",
    batch_size: int = BATCH_SIZE,
    num_steps: int = NUM_STEPS,
    learning_rate: float = LEARNING_RATE,
    damping: float = DAMPING,
    momentum: float = MOMENTUM,
    cov_ema_decay: float = COV_EMA_DECAY,
    invert_every: int = INVERT_EVERY,
    data=None,
    seed: int = 0,
    log_every: int = LOG_EVERY,
    auto_register: bool = False,
    logdir: Optional[str] = None,
    **model_kwargs,
) -> TrainResult:
    """Trains the classifier with K-FAC for `num_steps` and evaluates it.

    Before the first step, one covariance update (decay 0) and one inverse
    update on the first batch replace the identity initial factors; then the
    covariance decay is `min(cov_ema_decay, n / (n + 1))` at update `n` (a
    running mean turning into the moving average), the training op and the
    covariance update run together, and the inverses are refreshed after
    every `invert_every`-th step.

    Args:
      registration: "bag" or "multi" (see `build_model`).
      batch_size: examples per step.
      num_steps: training steps.
      learning_rate, damping, momentum, cov_ema_decay: K-FAC hyperparameters.
      invert_every: steps between inverse updates.
      data: optional `(train_ids, train_labels, test_ids, test_labels)`;
        default `make_generated_data(seed=seed)` with the model's sizes.
      seed: seed of the data, weights, batch order and sampled targets.
      log_every: steps between log lines (0: no logging).
      auto_register: as in `build_training_graph`.
      logdir: root of the TensorBoard logs (`<logdir>/embedding_text/<date-time>`:
        the losses, K-FAC's summaries every `log_every` steps); None: none.
      **model_kwargs: `vocab_size`, `embedding_dim`, `num_classes`.

    Returns:
      `TrainResult(test_accuracy, test_loss, train_losses)`.
    """
    if data is None:
        data_sizes = {
            key: model_kwargs[key]
            for key in ("vocab_size", "num_classes")
            if key in model_kwargs
        }
        data = make_generated_data(seed=seed, **data_sizes)
    train_ids, train_labels, test_ids, test_labels = data
    rng = np.random.RandomState(seed)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        model = build_training_graph(
            sequence_length=train_ids.shape[1],
            registration=registration,
            learning_rate=learning_rate,
            damping=damping,
            momentum=momentum,
            cov_ema_decay=cov_ema_decay,
            seed=seed,
            auto_register=auto_register,
            **model_kwargs,
        )

        log = _tensorboard.training_log(
            _tensorboard.run_logdir(logdir, "embedding_text"),
            model.optimizer,
            log_every or _tensorboard.SUMMARY_EVERY,
        )

        def random_batch_feed():
            indices = rng.randint(0, len(train_ids), batch_size)
            return {model.ids: train_ids[indices], model.labels: train_labels[indices]}

        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            # The factors start from a batch of their own, then training draws more.
            warm_start_feed = random_batch_feed()
            train_losses = _training.run_warm_started_loop(
                sess,
                model.loss,
                model.train_op,
                (random_batch_feed() for _ in itertools.count()),
                num_steps,
                (model.cov_update_op, model.inv_update_op, model.cov_decay),
                warm_start_feed=warm_start_feed,
                cov_ema_decay=cov_ema_decay,
                invert_every=invert_every,
                log_every=log_every,
                log=log,
            )
            if log is not None:
                log.close()
            test_loss, test_accuracy = sess.run(
                [model.loss, model.accuracy],
                {model.ids: test_ids, model.labels: test_labels},
            )
    return TrainResult(float(test_accuracy), float(test_loss), train_losses)


# (type, name, default, help[, choices]) rows, see `_cli`; named as `train`'s arguments.
FLAGS_TABLE = (
    (
        "enum",
        "registration",
        "bag",
        "bag: register_embedding of the summed rows; multi: register_embedding_multi.",
        REGISTRATIONS,
    ),
    ("integer", "batch_size", BATCH_SIZE, "Examples per step."),
    ("integer", "num_steps", NUM_STEPS, "Training steps."),
    ("float", "learning_rate", LEARNING_RATE, "Learning rate."),
    ("float", "damping", DAMPING, "K-FAC damping."),
    ("float", "momentum", MOMENTUM, "K-FAC momentum."),
    ("integer", "seed", 0, "Random seed."),
    _cli.AUTO_REGISTER_FLAG,
    _tensorboard.LOGDIR_FLAG,
)


# `define_flags(flag_values)` and `main(argv, flag_values)`, as `app.run` calls it.
define_flags, main = _cli.entry_points(train, FLAGS_TABLE)


if __name__ == "__main__":
    _cli.run(define_flags, main)
