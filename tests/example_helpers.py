"""Checks shared by the tests of the MLP and ConvNet examples."""

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags

import kfac


def assert_loss_falls(history, margin):
    """The mean loss of the last 3 steps is below the first loss by `margin`."""
    losses = [stats.loss for stats in history]
    assert all(np.isfinite(losses)), losses
    assert float(np.mean(losses[-3:])) < losses[0] - margin, losses


def tower_devices(graph):
    """The devices of the ops the towers of `graph` placed (variable reads aside)."""
    return {
        op.device
        for op in graph.get_operations()
        if op.name.startswith("tower") and op.type != "ReadVariableOp"
    }


def build_toy_regression(num_steps=30):
    """Least squares `0.5·mean((x w − y)²)` with w = 0: initial loss 1.25."""
    x = np.asarray([[1.0], [2.0]], np.float32)
    y = np.asarray([[1.0], [2.0]], np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat(num_steps).batch(2)
    x, y = tf.data.make_one_shot_iterator(dataset).get_next()
    w = tf.get_variable("w", shape=[1, 1], initializer=tf.zeros_initializer())
    y_hat = tf.matmul(x, w)
    loss = tf.reduce_mean(0.5 * tf.square(y_hat - y))
    layer_collection = kfac.LayerCollection()
    layer_collection.register_fully_connected(params=w, inputs=x, outputs=y_hat)
    layer_collection.register_normal_predictive_distribution(y_hat)
    return loss, layer_collection


def queue_fed_losses(train_fn, **kwargs):
    """Step losses of an MLP/ConvNet `train_*` call on 2 epochs of fake data in
    batches of 8 (graph seed 0); `kwargs` go to `train_fn`."""
    history = []
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        train_fn(
            data_dir=None,
            num_epochs=2,
            use_fake_data=True,
            batch_size=8,
            history=history,
            **kwargs,
        )
    return [stats.loss for stats in history]


def parse_flags(example, argv):
    """Fresh `FlagValues` with `example.define_flags`, parsed from `argv`
    (with `--logdir=` unless `argv` sets it: tests write no TensorBoard logs
    into the working directory)."""
    flag_values = flags.FlagValues()
    example.define_flags(flag_values)
    if "logdir" in flag_values and not any(
            arg.startswith("--logdir") for arg in argv):
        argv = argv + ["--logdir="]
    flag_values([example.__name__] + argv)
    return flag_values
