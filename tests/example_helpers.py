"""Checks shared by the tests of the MLP and ConvNet examples."""

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags

import kfac
from kfac.examples import comparison_training


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


def one_step(graph_ops, spec, batch, step=0, budget_spent=0.0, fetch_gradients=False):
    """`(loss, variables' names, before, gradients, after)` of one
    `comparison_training.Trainer.step` of `spec` in the comparison graph
    `graph_ops` on `batch` (the global step first set to `step`; gradients at
    the initial weights when asked for, else None)."""
    with graph_ops.graph.as_default(), tf.Session() as sess:
        variables = tf.trainable_variables()
        sess.run(tf.global_variables_initializer())
        tf.train.get_global_step().load(step, sess)
        feed = {graph_ops.model.inputs: batch}
        before = sess.run(variables)
        gradients = (sess.run(tf.gradients(graph_ops.model.loss, variables), feed)
                     if fetch_gradients else None)
        trainer = comparison_training.Trainer(sess, spec, graph_ops)
        loss = trainer.step(step, batch, batch, budget_spent=budget_spent)
        after = sess.run(variables)
    return loss, [var.op.name for var in variables], before, gradients, after


def assert_first_sgd_step(graph_ops, spec, batch, rate, keep=1.0, step=0,
                          budget_spent=0.0):
    """SGD's first step from rest (with or without momentum) is
    `-rate·gradient`; kernels are then scaled by `keep` (a weight decay),
    biases not."""
    _, names, before, grads, after = one_step(graph_ops, spec, batch, step,
                                              budget_spent, fetch_gradients=True)
    for name, old, grad, new in zip(names, before, grads, after):
        want = (old - rate * grad) * (keep if old.ndim >= 2 else 1.0)
        # float32: rounding of the weights and of the two runs' gradients.
        tolerance = 1e-3 * np.max(np.abs(rate * grad)) + 1e-6 * np.max(np.abs(old))
        np.testing.assert_allclose(new, want, rtol=0, atol=tolerance, err_msg=name)
