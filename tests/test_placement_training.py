"""KfacOptimizer with round-robin placement over 4 CPU devices still trains."""

import numpy as np
import tensorflow.compat.v1 as tf

import kfac

DEVICES = ["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3"]


def _device_index(device_string):
    return int(device_string.rsplit(":", 1)[-1])


def test_round_robin_optimizer_places_ops_and_reduces_the_loss(tf_behavior):
    rng = np.random.RandomState(0)
    inputs = rng.randn(64, 6).astype(np.float32)
    labels = np.argmax(inputs @ rng.randn(6, 3), axis=1)
    with tf.Graph().as_default():
        x = tf.constant(inputs)
        w1 = tf.get_variable("w1", [6, 8])
        b1 = tf.get_variable("b1", [8], initializer=tf.zeros_initializer())
        w2 = tf.get_variable("w2", [8, 3])
        pre1 = tf.matmul(x, w1) + b1
        hidden = tf.tanh(pre1)
        logits = tf.matmul(hidden, w2)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        )
        layers = kfac.LayerCollection()
        layers.register_fully_connected((w1, b1), x, pre1)
        layers.register_fully_connected(w2, hidden, logits)
        layers.register_categorical_predictive_distribution(logits)
        optimizer = kfac.KfacOptimizer(
            0.05,
            0.9,
            0.01,
            layers,
            momentum=0.9,
            placement_strategy="round_robin",
            cov_devices=DEVICES,
            inv_devices=DEVICES,
        )
        cov_ops, cov_op, inv_ops, inv_op, _, _ = optimizer.make_ops_and_vars()
        train_op = optimizer.minimize(loss)

        # Four factors (A, G of each layer): factor i on device i mod 4.
        assert len(cov_ops) == 4 and len(inv_ops) == 4
        assert [_device_index(op.device) for op in cov_ops] == [0, 1, 2, 3]
        assert [_device_index(op.device) for op in inv_ops] == [0, 1, 2, 3]

        config = tf.ConfigProto(device_count={"CPU": 4})
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer())
            initial = sess.run(loss)
            for _ in range(30):
                sess.run([train_op, cov_op])
                sess.run(inv_op)
            final = sess.run(loss)
    assert final < 0.5 * initial, (initial, final)
