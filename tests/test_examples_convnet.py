"""Tests for kfac/examples/convnet.py: layers, the model and single-machine training."""

import os

import numpy as np
import pytest
import tensorflow as tf_root
import tensorflow.compat.v1 as tf
from example_helpers import assert_loss_falls
from example_helpers import build_toy_regression
from example_helpers import tower_devices

import kfac
from kfac.examples import convnet
from kfac.examples import mnist


def _numpy_conv_same(x, w):
    """Stride-1 SAME convolution (cross-correlation) by explicit loops."""
    batch, height, width, _ = x.shape
    kernel, _, _, out_channels = w.shape
    pad = (kernel - 1) // 2
    padded = np.pad(
        x, [(0, 0), (pad, kernel - 1 - pad), (pad, kernel - 1 - pad), (0, 0)]
    )
    out = np.zeros([batch, height, width, out_channels])
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                patch = padded[b, i : i + kernel, j : j + kernel, :]
                for c in range(out_channels):
                    out[b, i, j, c] = np.sum(patch * w[..., c])
    return out


def test_conv_layer_shapes_names_and_values():
    rng = np.random.RandomState(0)
    with tf.Graph().as_default():
        inputs = tf.constant(rng.randn(5, 3, 3, 2), tf.float32)
        pre, act, (kernel, bias) = convnet.conv_layer(
            layer_id=1, inputs=inputs, kernel_size=3, out_channels=5
        )
        assert kernel.op.name == "conv_1/kernel" and bias.op.name == "conv_1/bias"
        assert isinstance(kernel, tf_root.Variable) and isinstance(
            bias, tf_root.Variable
        )
        assert pre.shape.as_list() == [5, 3, 3, 5] and act.shape.as_list() == [
            5,
            3,
            3,
            5,
        ]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            initial_kernel = sess.run(kernel)
            sess.run([kernel.assign(rng.randn(3, 3, 2, 5)), bias.assign(rng.randn(5))])
            x, w, b, pre_value, act_value = sess.run([inputs, kernel, bias, pre, act])
    assert 0.003 < initial_kernel.std() < 0.03  # normal(stddev=0.01)
    expected = _numpy_conv_same(x, w) + b
    np.testing.assert_allclose(pre_value, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(act_value, np.maximum(expected, 0), rtol=1e-5, atol=1e-5)


def test_max_pool_layer_name_shape_and_values():
    x = np.random.RandomState(0).randn(2, 6, 6, 2).astype(np.float32)
    with tf.Graph().as_default():
        act = convnet.max_pool_layer(
            layer_id=1, inputs=tf.constant(x), kernel_size=5, stride=3
        )
        assert act.op.name == "pool_1/pool"
        assert act.shape.as_list() == [2, 2, 2, 2]
        with tf.Session() as sess:
            value = sess.run(act)
    # SAME padding: output 2x2 of 5x5 windows starting at -1 (pad 1 before, 2 after).
    for i in range(2):
        for j in range(2):
            rows = slice(max(3 * i - 1, 0), 3 * i + 4)
            cols = slice(max(3 * j - 1, 0), 3 * j + 4)
            np.testing.assert_array_equal(
                value[:, i, j], x[:, rows, cols].max(axis=(1, 2))
            )


def test_linear_layer_is_affine():
    x = np.random.RandomState(0).randn(5, 20).astype(np.float32)
    with tf.Graph().as_default():
        pre, (kernel, bias) = convnet.linear_layer(
            layer_id=1, inputs=tf.constant(x), output_size=5
        )
        assert kernel.op.name == "fc_1/kernel" and bias.op.name == "fc_1/bias"
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(bias.assign([1.0, 2.0, 3.0, 4.0, 5.0]))
            w, b, value = sess.run([kernel, bias, pre])
    np.testing.assert_allclose(value, x @ w + b, rtol=1e-5, atol=1e-5)


def _numpy_max_pool_same(x, kernel, stride):
    """SAME max-pooling by explicit loops (padding never wins the max)."""
    batch, height, width, channels = x.shape
    out_height, out_width = -(-height // stride), -(-width // stride)
    pad_rows = max((out_height - 1) * stride + kernel - height, 0) // 2
    pad_cols = max((out_width - 1) * stride + kernel - width, 0) // 2
    out = np.zeros([batch, out_height, out_width, channels])
    for i in range(out_height):
        for j in range(out_width):
            rows = slice(max(i * stride - pad_rows, 0), i * stride - pad_rows + kernel)
            cols = slice(max(j * stride - pad_cols, 0), j * stride - pad_cols + kernel)
            out[:, i, j] = x[:, rows, cols].max(axis=(1, 2))
    return out


def _numpy_convnet_loss(x, labels, variables):
    kernel0, bias0, kernel2, bias2, kernel4, bias4 = variables
    act0 = np.maximum(_numpy_conv_same(x, kernel0) + bias0, 0)
    act1 = _numpy_max_pool_same(act0, 3, 2)
    act2 = np.maximum(_numpy_conv_same(act1, kernel2) + bias2, 0)
    act3 = _numpy_max_pool_same(act2, 3, 2)
    logits = act3.reshape(len(x), -1) @ kernel4 + bias4
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -np.mean(log_probs[np.arange(len(labels)), labels])
    return loss, np.mean(np.argmax(logits, axis=1) == labels)


def test_build_model_registers_three_blocks_and_one_loss():
    rng = np.random.RandomState(0)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 6, 6, 3])
        y = tf.placeholder(tf.int64, [None])
        layer_collection = kfac.LayerCollection()
        loss, accuracy = convnet.build_model(
            x, y, num_labels=5, layer_collection=layer_collection
        )
        blocks = list(layer_collection.get_blocks())
        assert [type(block).__name__ for block in blocks] == [
            "ConvKFCBasicFB",
            "ConvKFCBasicFB",
            "FullyConnectedKFACBasicFB",
        ]
        assert len(layer_collection.losses) == 1
        # 6x6 -> pool -> 3x3 -> pool -> 2x2, 16 channels.
        assert [v.shape.as_list() for v in tf.trainable_variables()] == [
            [5, 5, 3, 16],
            [16],
            [5, 5, 16, 16],
            [16],
            [64, 5],
            [5],
        ]
        feed = {x: rng.randn(10, 6, 6, 3), y: rng.randint(5, size=10)}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            # Larger weights than the initial ones, so that every layer matters.
            sess.run(
                [
                    v.assign(rng.randn(*v.shape.as_list()) * 0.3)
                    for v in tf.trainable_variables()
                ]
            )
            loss_value, accuracy_value, variables = sess.run(
                [loss, accuracy, tf.trainable_variables()], feed
            )
    expected_loss, expected_accuracy = _numpy_convnet_loss(feed[x], feed[y], variables)
    np.testing.assert_allclose(loss_value, expected_loss, rtol=1e-4)
    np.testing.assert_allclose(accuracy_value, expected_accuracy)


@pytest.mark.parametrize("optimizer", ["kfac", "sgd"])
def test_minimize_loss_single_machine_solves_toy_problem(tf_behavior, optimizer):
    history = []
    with tf.Graph().as_default():
        loss, layer_collection = build_toy_regression()
        final = convnet.minimize_loss_single_machine(
            loss,
            loss,
            layer_collection,
            optimizer=optimizer,
            learning_rate=0.1,
            momentum=0.5,
            damping=0.01,
            invert_every=1,
            history=history,
            log_every=0,
        )
    assert len(history) == 30  # until the data run out
    assert history[0].loss == pytest.approx(1.25)
    assert final == history[-1].accuracy < 1e-3


def test_minimize_loss_single_machine_rejects_unknown_optimizer():
    with tf.Graph().as_default():
        loss, layer_collection = build_toy_regression()
        with pytest.raises(
            ValueError, match=r"optimizer must be one of \('kfac', 'sgd'\), got 'adam'"
        ):
            convnet.minimize_loss_single_machine(
                loss, loss, layer_collection, optimizer="adam"
            )


def test_train_mnist_single_machine_kfac_loss_falls():
    # 32 fake examples; a short covariance memory so that K-FAC's statistics
    # forget their identity initialisation within the few steps of a test.
    history = []
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        accuracy = convnet.train_mnist_single_machine(
            None,
            num_epochs=12,
            use_fake_data=True,
            batch_size=8,
            invert_every=4,
            cov_ema_decay=0.8,
            history=history,
            log_every=0,
        )
    assert len(history) == 48
    assert accuracy == history[-1].accuracy
    assert_loss_falls(history, margin=1.0)


def test_train_mnist_single_machine_sgd_uses_momentum_and_no_kfac():
    history = []
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        accuracy = convnet.train_mnist_single_machine(
            None,
            num_epochs=5,
            use_fake_data=True,
            batch_size=8,
            optimizer="sgd",
            learning_rate=0.01,
            num_steps=3,
            history=history,
            log_every=0,
        )
        names = [v.op.name for v in tf.global_variables()]
    assert len(history) == 3 and accuracy == history[-1].accuracy  # num_steps
    assert all(np.isfinite([stats.loss for stats in history]))
    assert "conv_0/kernel/Momentum" in names
    assert not [name for name in names if name.startswith("KFAC")]


def test_train_mnist_multitower_runs_on_two_cpus():
    history = []
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        convnet.train_mnist_multitower(
            None,
            num_epochs=12,
            num_towers=2,
            batch_size=4,
            invert_every=4,
            cov_ema_decay=0.8,
            history=history,
            log_every=0,
        )
        graph = tf.get_default_graph()
    assert tower_devices(graph) == {"/device:CPU:0", "/device:CPU:1"}
    assert len(history) == 48
    assert_loss_falls(history, margin=1.0)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir(mnist.DEFAULT_DATA_DIR),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_kfac_beats_sgd_on_fashion_mnist():
    """In 60 steps of 64 examples, K-FAC's training loss ends well below SGD's.

    SGD with momentum 0.9 uses learning rate 0.01 (0.03 makes it diverge).
    """
    final_losses = {}
    for optimizer, learning_rate in [("kfac", convnet.LEARNING_RATE), ("sgd", 0.01)]:
        history = []
        with tf.Graph().as_default():
            tf.set_random_seed(0)
            convnet.train_mnist_single_machine(
                None,
                num_epochs=1,
                batch_size=64,
                optimizer=optimizer,
                learning_rate=learning_rate,
                num_steps=60,
                invert_every=10,
                history=history,
                log_every=0,
            )
        assert history[0].loss == pytest.approx(np.log(10), abs=0.1)
        final_losses[optimizer] = np.mean([s.loss for s in history[-10:]])
    assert final_losses["kfac"] < final_losses["sgd"] - 0.2, final_losses
