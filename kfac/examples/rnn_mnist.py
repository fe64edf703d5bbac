r"""A tanh RNN reading Fashion-MNIST images row by row, trained with K-FAC or Adam.

Each 28x28 image is a sequence of `T = 28` rows of 28 pixels. One recurrent
layer with ONE weight matrix and ONE bias, shared by all time steps,

    s_t = [x_t, h_{t-1}] @ W + b,   h_t = tanh(s_t),   h_{-1} = 0,

(`W` is `[28 + H, H]`, i.e. the input and recurrent weights stacked), is
followed by a softmax layer on the last state, `logits = h_{T-1} @ V + c`.

Padded sequences (`--min_length` below 28): each image keeps its first
`length` rows, `length` drawn uniformly from `[min_length, 28]` per image
(fixed seeds, so every run sees the same lengths), and the other rows are
zeros. The RNN is masked, `h_t = m_t·tanh(s_t) + (1 - m_t)·h_{t-1}` with
`m_t = [t < length]`, so the classifier reads the state of the last real row.

K-FAC registration:
* the recurrent layer is one fully connected layer used `T` times:
  `register_fully_connected_multi((W, b), inputs=[[x_t, h_{t-1}] for t],
  outputs=[s_t for t], approx=..., mask=...)`, with approx
  - "kron_indep" (also named "kron_expand"): uses treated as independent,
    `F ≈ T·(A ⊗ G)`;
  - "kron_reduce": KFAC-reduce (Eschenhagen et al. 2023), per example the
    inputs averaged and the output gradients summed over the steps before
    the outer products (`B` rows instead of `T·B`);
  - "kron_series_1" / "kron_series_2": the temporally correlated
    approximations of Martens, Ba & Grosse (2018), options 1 and 2, which also
    use the lag-1 statistics `E[ã_{t+1} ã_tᵀ]`, `E[g_{t+1} g_tᵀ]` (full
    sequences only: they take no mask);
  and for padded sequences `mask=tf.sequence_mask(lengths, 28)`, so the
  padded steps add nothing to the factors and the normalisation counts real
  steps only;
* the output layer with `register_fully_connected`, and the logits with
  `register_categorical_predictive_distribution`.
With `auto_register` (the command line's default; `--noauto_register` for the
hand registrations above), `build_model` registers the logits only and
`LayerCollection.auto_register_layers()` finds the same two layers (the
recurrent one used `T` times, with `approx` as the collection's default
multi-use approximation). Auto-registration cannot pass the mask: padded
sequences always use the hand registrations.

The covariance moving averages start from the first batch's statistics: the
decay fed at update `n` is `min(cov_ema_decay, n / (n + 1))` (a running mean
that turns into the exponential average), because the factors are initialised
to the identity, which would otherwise dominate the small output-gradient
factors for hundreds of steps.

Results (Fashion-MNIST, 1000 steps of batch 128, hidden size 128, test split
of 10000 images; seeds 0 / 1; 2 shared CPU cores):

  | optimizer              | hyperparameters          | test accuracy | test loss   |
  |------------------------|--------------------------|---------------|-------------|
  | K-FAC, kron_indep      | lr 0.003, damping 0.1,   | 0.860 / 0.854 | 0.396/0.408 |
  | K-FAC, kron_series_1   |   momentum 0.9           | 0.859 / 0.859 | 0.392/0.399 |
  | K-FAC, kron_series_2   |   (all four, not tuned   | 0.858 / 0.858 | 0.395/0.396 |
  | K-FAC, kron_reduce     |   for kron_reduce)       | 0.834 / 0.855 | 0.473/0.404 |
  | Adam                   | lr 0.001                 | 0.824 / 0.812 | 0.494/0.527 |

("kron_expand" is the block of "kron_indep": seed 0 gives the same 0.860 /
0.396.) Padded sequences, `--min_length=8` (lengths 8-28, the same
hyperparameters, not tuned for this task; seeds 0 / 1):

  | optimizer              | test accuracy | test loss   |
  |------------------------|---------------|-------------|
  | K-FAC, kron_indep      | 0.785 / 0.787 | 0.579/0.579 |
  | K-FAC, kron_reduce     | 0.794 / 0.791 | 0.569/0.574 |
  | Adam                   | 0.731 / 0.731 | 0.730/0.727 |

Tried (seed 0): K-FAC (lr, damping) = (0.003, 0.1), (0.01, 0.1), (0.03, 1)
give 0.842-0.860 at 1000 steps; at 300 steps damping 0.01 diverged with
momentum 0.9 and lr 0.1 was unstable. Adam lr 0.0005, 0.001, 0.002 give
0.809-0.824. A K-FAC step costs about twice an Adam step here (~30-40 s
against ~19 s per 1000-step run). kron_indep and the two series
approximations agree within the seed-to-seed spread on this task; kron_reduce
varies more between seeds (0.834 / 0.855). On padded sequences the two that
take the mask are within 0.01 of each other, both ahead of Adam.
`bench/sequences.py` compares kron_expand, kron_reduce, Adam and SGD at
equal wall-clock time (docs/benchmark/sequences.md).

Run:
  python -m kfac.examples.rnn_mnist --optimizer=kfac --approx=kron_series_2
  python -m kfac.examples.rnn_mnist --optimizer=adam --num_steps=300
  python -m kfac.examples.rnn_mnist --use_fake_data --num_steps=50
  python -m kfac.examples.rnn_mnist --noauto_register   # the hand registrations
  python -m kfac.examples.rnn_mnist --approx=kron_reduce --min_length=8
"""

import itertools
from typing import List
from typing import Optional
from typing import Tuple

import numpy as np
import tensorflow.compat.v1 as tf

import kfac
from kfac.examples import _cli
from kfac.examples import _tensorboard
from kfac.examples import _training
from kfac.examples import comparison
from kfac.examples import mnist

NUM_CLASSES = mnist.NUM_CLASSES
HIDDEN_SIZE = 128
BATCH_SIZE = 128
NUM_STEPS = 1000
APPROXIMATIONS = (
    "kron_indep",
    "kron_expand",
    "kron_reduce",
    "kron_series_1",
    "kron_series_2",
)
# The approximations that take the mask of padded sequences (`--min_length`).
MASKED_APPROXIMATIONS = ("kron_indep", "kron_expand", "kron_reduce")
OPTIMIZERS = ("kfac", "adam")
# Tuned a little per method for 1000 steps of batch 128 on Fashion-MNIST
# (module docstring, "Results"); all three K-FAC approximations share them.
DEFAULT_HYPERPARAMETERS = {
    "kfac": dict(learning_rate=0.003, damping=0.1, momentum=0.9),
    "adam": dict(learning_rate=0.001),
}
COV_EMA_DECAY = 0.95
INVERT_EVERY = 5
EVAL_BATCH_SIZE = 2000
LOG_EVERY = 50
# Seeds of the training and test splits' sequence lengths (`--min_length`):
# every run, whatever its `seed`, sees the same lengths for the same image.
LENGTHS_SEEDS = (28, 29)

TrainResult = _training.TrainResult


def rnn_layer(
    sequences: tf.Tensor,
    hidden_size: int,
    seed: int = 0,
    lengths: Optional[tf.Tensor] = None,
) -> Tuple[
    tf.Tensor, List[tf.Tensor], List[tf.Tensor], Tuple[tf.Variable, tf.Variable]
]:
    """The unrolled tanh RNN `s_t = [x_t, h_{t-1}] @ W + b`, `h_t = tanh(s_t)`.

    With `lengths`, the masked RNN `h_t = m_t·tanh(s_t) + (1 - m_t)·h_{t-1}`,
    `m_t = [t < length]`: the state stops at the last real row of each
    example, whatever the padding rows hold.

    Variables `rnn/weights` (`[input_size + hidden_size, hidden_size]`: rows for
    the inputs scaled normal `N(0, 1/input_size)`, rows for the state an
    orthogonal matrix) and `rnn/bias` (zeros). The initial values come from
    `np.random.RandomState(seed)`, so runs are reproducible.

    Args:
      sequences: float `[B, T, input_size]` with static `T` and `input_size`.
      hidden_size: `H`, the state size.
      seed: seed of the initial weights.
      lengths: optional int `[B]`, the real rows of each sequence (1 to `T`).

    Returns:
      `(last_state, layer_inputs, preactivations, (weights, bias))`: the state
      after the last (real) row `[B, H]`, and the lists over time steps of the
      layer inputs `[x_t, h_{t-1}]` (`[B, input_size + H]`) and
      pre-activations `s_t` (`[B, H]`) that K-FAC registers.
    """
    num_steps, input_size = sequences.shape.as_list()[1:]
    rng = np.random.RandomState(seed)
    input_rows = rng.randn(input_size, hidden_size) / np.sqrt(input_size)
    recurrent_rows, _ = np.linalg.qr(rng.randn(hidden_size, hidden_size))
    initial_weights = np.concatenate([input_rows, recurrent_rows]).astype(np.float32)
    with tf.variable_scope("rnn"):
        weights = tf.get_variable("weights", initializer=tf.constant(initial_weights))
        bias = tf.get_variable(
            "bias", [hidden_size], initializer=tf.zeros_initializer()
        )
        state = tf.zeros([tf.shape(sequences)[0], hidden_size], sequences.dtype)
        real_rows = None
        if lengths is not None:
            real_rows = tf.sequence_mask(lengths, num_steps, dtype=sequences.dtype)
        layer_inputs, preactivations = [], []
        for step in range(num_steps):
            layer_input = tf.concat([sequences[:, step, :], state], axis=1)
            # Each matmul reads the variables once: T registered uses.
            preactivation = tf.nn.bias_add(tf.matmul(layer_input, weights), bias)
            if real_rows is None:
                state = tf.tanh(preactivation)
            else:
                real = real_rows[:, step : step + 1]
                state = real * tf.tanh(preactivation) + (1.0 - real) * state
            layer_inputs.append(layer_input)
            preactivations.append(preactivation)
    return state, layer_inputs, preactivations, (weights, bias)


def build_model(
    sequences: tf.Tensor,
    labels: tf.Tensor,
    layer_collection: "kfac.LayerCollection",
    hidden_size: int = HIDDEN_SIZE,
    approx: str = "kron_indep",
    num_classes: int = NUM_CLASSES,
    seed: int = 0,
    register_layers: bool = True,
    lengths: Optional[tf.Tensor] = None,
):
    """Builds the RNN classifier and registers it with `layer_collection`.

    Args:
      sequences: float32 `[B, T, input_size]` (images: `[B, 28, 28]`).
      labels: int64 `[B]`.
      layer_collection: the `kfac.LayerCollection` to register with.
      hidden_size: RNN state size.
      approx: approximation of the recurrent layer (one of `APPROXIMATIONS`;
        with `lengths`, of `MASKED_APPROXIMATIONS`).
      num_classes: number of classes.
      seed: seed of the initial weights.
      register_layers: False: register the logits only (the layers are left
        to `layer_collection.auto_register_layers()`).
      lengths: optional int `[B]`: padded sequences, read by the masked RNN
        (`rnn_layer`); the recurrent layer is registered with
        `mask=tf.sequence_mask(lengths, T)`, so the padded steps add nothing
        to its factors.

    Returns:
      `(loss, accuracy, logits)`: mean cross-entropy and accuracy of the batch.

    Raises:
      ValueError: for an unknown `approx`, one that takes no mask with
        `lengths`, or `lengths` without `register_layers` (auto-registration
        cannot pass the mask).
    """
    _training.check_choice("approx", approx, list(APPROXIMATIONS))
    if lengths is not None:
        _training.check_choice(
            "approx of padded sequences", approx, list(MASKED_APPROXIMATIONS)
        )
        if not register_layers:
            raise ValueError(
                "Padded sequences (lengths) need the hand registrations: "
                "auto-registration cannot pass the mask."
            )
    last_state, layer_inputs, preactivations, rnn_params = rnn_layer(
        sequences, hidden_size, seed, lengths
    )
    rng = np.random.RandomState(seed + 1)
    initial_output_weights = rng.randn(hidden_size, num_classes) / np.sqrt(hidden_size)
    logits, output_params = _training.output_layer(last_state, initial_output_weights)
    loss, accuracy = _training.classification_loss_and_accuracy(logits, labels)

    if register_layers:
        mask = None
        if lengths is not None:
            mask = tf.sequence_mask(lengths, len(layer_inputs))
        layer_collection.register_fully_connected_multi(
            rnn_params, layer_inputs, preactivations, approx=approx, mask=mask
        )
        layer_collection.register_fully_connected(output_params, last_state, logits)
    layer_collection.register_categorical_predictive_distribution(logits, name="logits")
    return loss, accuracy, logits


def random_lengths(
    num_examples: int, min_length: int, max_length: int, seed: int
) -> np.ndarray:
    """int32 `[num_examples]`, uniform on `[min_length, max_length]`
    (`np.random.RandomState(seed)`)."""
    rng = np.random.RandomState(seed)
    return rng.randint(min_length, max_length + 1, num_examples).astype(np.int32)


def zero_padding(sequences: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A copy of `sequences` `[N, T, ...]` whose rows `t >= lengths[n]` are zero."""
    real = np.arange(sequences.shape[1])[None, :] < lengths[:, None]
    real = real.reshape(real.shape + (1,) * (sequences.ndim - 2))
    return sequences * real.astype(sequences.dtype)


def make_generated_data(
    num_train: int = 1024,
    num_test: int = 512,
    num_steps: int = mnist.IMAGE_SIZE,
    input_size: int = mnist.IMAGE_SIZE,
    num_classes: int = NUM_CLASSES,
    seed: int = 0,
):
    """Learnable stand-in sequences: a fixed random template per class plus noise.

    Unlike `mnist.make_fake_data` (uniform pixels, random labels), the label
    can be predicted from the sequence, so the loss falls within a few steps.
    Values lie in [0, 1] like pixels; training and test examples share the
    class templates and differ in their noise.

    Returns:
      `(train_sequences, train_labels, test_sequences, test_labels)`: float32
      `[N, num_steps, input_size]` and int64 `[N]`.
    """
    rng = np.random.RandomState(seed)
    templates = rng.rand(num_classes, num_steps, input_size)

    def split(num_examples):
        labels = rng.randint(0, num_classes, num_examples).astype(np.int64)
        noise = rng.rand(num_examples, num_steps, input_size)
        return (0.6 * templates[labels] + 0.4 * noise).astype(np.float32), labels

    return split(num_train) + split(num_test)


def load_data(data_dir: Optional[str] = None, use_fake_data: bool = False):
    """`(train_images, train_labels, test_images, test_labels)`, images `[N, 28, 28]`.

    Args:
      data_dir: MNIST-format folder (None: Fashion-MNIST's Debian folder).
      use_fake_data: use `make_generated_data()` instead of files.
    """
    if use_fake_data:
        return make_generated_data()
    size = mnist.IMAGE_SIZE
    train_images, train_labels = mnist.load_mnist_arrays(data_dir, "train")
    test_images, test_labels = mnist.load_mnist_arrays(data_dir, "test")
    return (
        train_images.reshape([-1, size, size]),
        train_labels,
        test_images.reshape([-1, size, size]),
        test_labels,
    )


def pad_to_random_lengths(data, min_length: int):
    """Padded sequences of random lengths in `[min_length, T]` (`--min_length`).

    Args:
      data: `(train_x, train_y, test_x, test_y)`, sequences `[N, T, ...]`.
      min_length: the shortest length.

    Returns:
      `(data, (train_lengths, test_lengths))`: every sequence keeps its first
      `length` rows (`random_lengths`, seeds `LENGTHS_SEEDS`: fixed per image
      whatever the run's seed) and the rest become zeros. `min_length >= T`:
      `data` unchanged and `(None, None)`.
    """
    train_x, train_y, test_x, test_y = data
    num_steps = train_x.shape[1]
    if min_length >= num_steps:
        return data, (None, None)
    lengths = [
        random_lengths(len(x), min_length, num_steps, lengths_seed)
        for x, lengths_seed in zip((train_x, test_x), LENGTHS_SEEDS)
    ]
    padded = (
        zero_padding(train_x, lengths[0]),
        train_y,
        zero_padding(test_x, lengths[1]),
        test_y,
    )
    return padded, tuple(lengths)


def _feeder(placeholders, arrays):
    """`feed(indices)`: `{placeholder: array[indices]}` for each pair whose
    array is not None."""
    pairs = [(p, a) for p, a in zip(placeholders, arrays) if a is not None]

    def feed(indices):
        return {placeholder: array[indices] for placeholder, array in pairs}

    return feed


def _evaluate(sess, loss, accuracy, feed, num_examples):
    """Mean loss and accuracy over a whole split (`feed(slice)`), in chunks."""
    total_loss = total_correct = 0.0
    for start in range(0, num_examples, EVAL_BATCH_SIZE):
        chunk = slice(start, min(start + EVAL_BATCH_SIZE, num_examples))
        size = chunk.stop - chunk.start
        loss_value, accuracy_value = sess.run([loss, accuracy], feed(chunk))
        total_loss += loss_value * size
        total_correct += accuracy_value * size
    return total_correct / num_examples, total_loss / num_examples


def train(
    data_dir: Optional[str] = None,
    optimizer: str = "kfac",
    approx: str = "kron_indep",
    hidden_size: int = HIDDEN_SIZE,
    batch_size: int = BATCH_SIZE,
    num_steps: int = NUM_STEPS,
    learning_rate: Optional[float] = None,
    damping: Optional[float] = None,
    momentum: Optional[float] = None,
    cov_ema_decay: float = COV_EMA_DECAY,
    invert_every: int = INVERT_EVERY,
    use_fake_data: bool = False,
    data=None,
    seed: int = 0,
    log_every: int = LOG_EVERY,
    auto_register: bool = False,
    logdir: Optional[str] = None,
    min_length: int = mnist.IMAGE_SIZE,
) -> TrainResult:
    """Trains the RNN for `num_steps` mini-batches and evaluates it on the test split.

    K-FAC step: the training op and the covariance update run together every
    step; the inverses are refreshed after every `invert_every`-th step. Before
    the first step, one covariance update (decay 0) and one inverse update on
    the first batch replace the identity initial factors.

    Args:
      data_dir: MNIST-format folder (None: Fashion-MNIST's Debian folder).
      optimizer: "kfac" or "adam".
      approx: K-FAC approximation of the recurrent layer (`APPROXIMATIONS`;
        with padded sequences `MASKED_APPROXIMATIONS`); ignored by Adam.
      hidden_size: RNN state size.
      batch_size: examples per step.
      num_steps: training steps.
      learning_rate, damping, momentum: None takes
        `DEFAULT_HYPERPARAMETERS[optimizer]` (damping/momentum: K-FAC only).
      cov_ema_decay: final decay of K-FAC's covariance moving averages.
      invert_every: steps between K-FAC inverse updates.
      use_fake_data: train on `make_generated_data()` instead of files.
      data: optional `(train_x, train_y, test_x, test_y)` arrays (sequences
        `[N, T, input_size]`) used instead of `data_dir`/`use_fake_data`.
      seed: seed of the weights, the batch order and K-FAC's sampled targets.
      log_every: steps between log lines (0: no logging).
      auto_register: register the layers with `auto_register_layers()` (the
        recurrent one with `approx`) instead of `build_model`'s hand
        registrations; ignored for padded sequences (the mask needs the
        hand registration).
      logdir: root of the TensorBoard logs (`<logdir>/rnn_mnist/<date-time>`:
        the losses, K-FAC's summaries every `log_every` steps); None: none.
      min_length: below `T`, every training and test sequence keeps its first
        `length` rows, `length` uniform on `[min_length, T]` per example
        (`random_lengths`, seeds `LENGTHS_SEEDS`), and the rest are zeros;
        the model is the masked RNN. `>= T`: full sequences, unmasked.

    Returns:
      `TrainResult(test_accuracy, test_loss, train_losses)`: accuracy and
      mean cross-entropy on the whole test split after training, and the
      mini-batch loss of every step.

    Raises:
      ValueError: unknown `optimizer` or `approx`, a batch larger than the
        data, `min_length < 1`, or padded sequences with an `approx` that
        takes no mask.
    """
    _training.check_choice("optimizer", optimizer, list(OPTIMIZERS))
    _training.check_choice("approx", approx, list(APPROXIMATIONS))
    if min_length < 1:
        raise ValueError("min_length must be >= 1, got {}.".format(min_length))
    hyperparameters = dict(DEFAULT_HYPERPARAMETERS[optimizer])
    for name, value in (
        ("learning_rate", learning_rate),
        ("damping", damping),
        ("momentum", momentum),
    ):
        if value is not None:
            hyperparameters[name] = value
    if data is None:
        data = load_data(data_dir, use_fake_data)
    train_x, train_y, test_x, test_y = data
    if not 0 < batch_size <= len(train_x):
        raise ValueError(
            "batch_size must be in [1, {}] (the number of training examples), "
            "got {}.".format(len(train_x), batch_size)
        )
    (train_x, _, test_x, _), (train_lengths, test_lengths) = pad_to_random_lengths(
        data, min_length
    )
    if train_lengths is not None:
        if auto_register:
            tf.logging.info(
                "Padded sequences: the hand registrations (auto-registration "
                "cannot pass the mask)."
            )
            auto_register = False
    batches = comparison.minibatch_indices(len(train_x), batch_size, seed)

    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        sequences = tf.placeholder(tf.float32, [None] + list(train_x.shape[1:]))
        labels = tf.placeholder(tf.int64, [None])
        lengths = None
        if train_lengths is not None:
            lengths = tf.placeholder(tf.int32, [None], name="lengths")
        layer_collection = kfac.LayerCollection()
        loss, accuracy, _ = build_model(
            sequences,
            labels,
            layer_collection,
            hidden_size,
            approx,
            seed=seed,
            register_layers=not auto_register,
            lengths=lengths,
        )
        if auto_register:
            layer_collection.set_default_fully_connected_multi_approximation(approx)
            _training.auto_register_layers(layer_collection)
        global_step = tf.train.get_or_create_global_step()
        kfac_ops = kfac_optimizer = None
        if optimizer == "kfac":
            cov_decay = tf.placeholder_with_default(
                tf.constant(cov_ema_decay, tf.float32), [], name="cov_ema_decay"
            )
            kfac_optimizer = _training.make_kfac_optimizer(
                layer_collection,
                hyperparameters["learning_rate"],
                hyperparameters["damping"],
                hyperparameters["momentum"],
                cov_decay,
            )
            (train_op, cov_update_op), inv_update_op = _training.kfac_step_ops(
                kfac_optimizer, loss, global_step
            )
            kfac_ops = (cov_update_op, inv_update_op, cov_decay)
        else:
            adam = tf.train.AdamOptimizer(hyperparameters["learning_rate"])
            train_op = adam.minimize(loss, global_step=global_step)
        log = _tensorboard.training_log(
            _tensorboard.run_logdir(logdir, "rnn_mnist"),
            kfac_optimizer,
            log_every or _tensorboard.SUMMARY_EVERY,
        )

        placeholders = (sequences, labels, lengths)
        feed = _feeder(placeholders, (train_x, train_y, train_lengths))

        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            # The first batch also starts the factors (rather than the identity).
            first = next(batches)
            train_losses = _training.run_warm_started_loop(
                sess,
                loss,
                train_op,
                map(feed, itertools.chain([first], batches)),
                num_steps,
                kfac_ops,
                warm_start_feed=feed(first),
                cov_ema_decay=cov_ema_decay,
                invert_every=invert_every,
                log_every=log_every,
                log=log,
            )
            if log is not None:
                log.close()
            test_feed = _feeder(placeholders, (test_x, test_y, test_lengths))
            test_accuracy, test_loss = _evaluate(
                sess, loss, accuracy, test_feed, len(test_x)
            )
    return TrainResult(float(test_accuracy), float(test_loss), train_losses)


# (type, name, default, help[, choices]) rows, see `_cli`; named as `train`'s arguments.
FLAGS_TABLE = (
    _cli.DATA_DIR_FLAG,
    ("enum", "optimizer", "kfac", "Optimizer.", OPTIMIZERS),
    (
        "enum",
        "approx",
        "kron_indep",
        "K-FAC approximation of the recurrent layer.",
        APPROXIMATIONS,
    ),
    ("integer", "hidden_size", HIDDEN_SIZE, "RNN state size."),
    ("integer", "batch_size", BATCH_SIZE, "Examples per step."),
    ("integer", "num_steps", NUM_STEPS, "Training steps."),
    ("float", "learning_rate", None, "Learning rate (default: per optimizer)."),
    (
        "float",
        "damping",
        None,
        "K-FAC damping (default %s)." % DEFAULT_HYPERPARAMETERS["kfac"]["damping"],
    ),
    (
        "float",
        "momentum",
        None,
        "K-FAC momentum (default %s)." % DEFAULT_HYPERPARAMETERS["kfac"]["momentum"],
    ),
    ("float", "cov_ema_decay", COV_EMA_DECAY, "Decay of K-FAC's covariance averages."),
    ("integer", "invert_every", INVERT_EVERY, "Steps between K-FAC inverse updates."),
    (
        "bool",
        "use_fake_data",
        False,
        "Train on generated sequences instead of --data_dir.",
    ),
    ("integer", "seed", 0, "Random seed."),
    (
        "integer",
        "min_length",
        mnist.IMAGE_SIZE,
        "Below 28: images cut to a random length in [min_length, 28] rows "
        "(zero-padded; masked RNN, hand registrations).",
    ),
    _cli.AUTO_REGISTER_FLAG,
    _tensorboard.LOGDIR_FLAG,
)


# `define_flags(flag_values)` and `main(argv, flag_values)`, as `app.run` calls it.
define_flags, main = _cli.entry_points(train, FLAGS_TABLE)


if __name__ == "__main__":
    _cli.run(define_flags, main)
