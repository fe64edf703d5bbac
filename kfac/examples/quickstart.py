"""The README's usage example, runnable: softmax regression trained with K-FAC.

Run with `python -m kfac.examples.quickstart` (`--noauto_register` for the
hand registration of the layer). It uses generated data, so it needs no
download, and prints the loss as it falls.
"""

from typing import List

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags

import kfac
from kfac.examples import _cli
from kfac.examples import _training


def make_data(num_examples=512, input_size=20, num_classes=5, seed=0):
    """A linearly separable-ish classification problem with known structure."""
    rng = np.random.RandomState(seed)
    true_weights = rng.randn(input_size, num_classes)
    inputs = rng.randn(num_examples, input_size).astype(np.float32)
    labels = np.argmax(
        inputs @ true_weights + 0.5 * rng.randn(num_examples, num_classes), 1
    )
    return inputs, np.eye(num_classes, dtype=np.float32)[labels]


def main(num_steps=50, print_every=10, auto_register=False, seed=0):
    """Trains for `num_steps` and returns the list of losses (one per step).

    With `auto_register`, `auto_register_layers()` registers the layer
    (instead of the hand registration `register_fully_connected`). `seed` is
    the graph-level seed (initial weights, K-FAC's sampled targets).
    """
    inputs, one_hot_labels = make_data()
    input_size, num_classes = inputs.shape[1], one_hot_labels.shape[1]
    losses = []
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        # README snippet starts here.
        x = tf.placeholder(tf.float32, [None, input_size])
        y = tf.placeholder(tf.float32, [None, num_classes])

        # Build the model.
        w = tf.get_variable("w", [input_size, num_classes])
        b = tf.get_variable("b", [num_classes], initializer=tf.zeros_initializer())
        logits = tf.matmul(x, w) + b
        loss = tf.reduce_mean(
            tf.nn.softmax_cross_entropy_with_logits_v2(labels=y, logits=logits)
        )

        # Register the model's predictive distribution, then the layer: found
        # in the graph, or by hand.
        layer_collection = kfac.LayerCollection()
        layer_collection.register_categorical_predictive_distribution(logits)
        if auto_register:
            _training.auto_register_layers(layer_collection)
        else:
            layer_collection.register_fully_connected((w, b), x, logits)

        # Construct the training ops.
        optimizer = kfac.KfacOptimizer(
            learning_rate=0.1,
            cov_ema_decay=0.95,
            damping=0.01,
            layer_collection=layer_collection,
            momentum=0.9,
        )
        train_op = optimizer.minimize(loss)
        cov_update_op, inv_update_op = (
            optimizer.cov_update_op,
            optimizer.inv_update_op,
        )

        # Minimize the loss.
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for step in range(num_steps):
                feed = {x: inputs, y: one_hot_labels}
                loss_value, _, _ = sess.run([loss, train_op, cov_update_op], feed)
                sess.run(inv_update_op, feed)
                # README snippet ends here.
                losses.append(float(loss_value))
                if print_every and step % print_every == 0:
                    print("step {:3d}  loss {:.4f}".format(step, loss_value))
    if print_every:
        print("step {:3d}  loss {:.4f}".format(num_steps, losses[-1]))
    return losses


FLAGS_TABLE = (
    ("integer", "num_steps", 50, "Training steps."),
    _cli.AUTO_REGISTER_FLAG,
)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Command-line flags of `main_from_flags` (`FLAGS_TABLE`)."""
    _cli.define_flags(FLAGS_TABLE, flag_values)


def main_from_flags(argv: List[str], flag_values: flags.FlagValues = flags.FLAGS):
    """`main` as the flags say; returns None (the exit status `app.run` reports)."""
    del argv  # Unused.
    main(num_steps=flag_values.num_steps, auto_register=flag_values.auto_register)


if __name__ == "__main__":
    _cli.run(define_flags, main_from_flags)
