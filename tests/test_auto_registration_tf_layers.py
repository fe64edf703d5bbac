"""Auto-registration of models built with `tf.compat.v1.layers` (TF 2.15: Keras 2).

`tf.compat.v1.layers` needs Keras 2 (TF <= 2.15); on newer TF these tests skip.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import kfac


def _layers():
    try:
        with tf.Graph().as_default():
            tf.layers.dense(tf.zeros([1, 1]), 1)
    except Exception as error:  # Keras 3 raises on use  # noqa: BLE001
        pytest.skip("tf.compat.v1.layers is unavailable: {}".format(error))
    return tf.layers


def _model(layers, training=True):
    images = tf.placeholder(tf.float32, [8, 6, 6, 2], name="images")
    labels = tf.placeholder(tf.int64, [8], name="labels")
    hidden = layers.conv2d(images, 3, 3, strides=2, padding="same", name="conv")
    hidden = layers.batch_normalization(hidden, training=training, name="bn")
    hidden = layers.flatten(tf.nn.relu(hidden))
    hidden = layers.dense(hidden, 5, name="fc")
    hidden = layers.batch_normalization(hidden, training=training, name="bn_fc")
    logits = layers.dense(tf.nn.relu(hidden), 3, name="logits")
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
    return logits, loss


def _summary(registrations):
    def names(params):
        params = params if isinstance(params, tuple) else (params,)
        return tuple(None if p is None else p.op.name for p in params)

    return [(r.kind, names(r.params), r.patterns) for r in registrations]


EXPECTED = [
    ("conv2d", ("conv/kernel", "conv/bias"), ["Conv2D + BiasAdd"]),
    ("scale_and_shift", ("bn/gamma", "bn/beta"), ["FusedBatchNormV3"]),
    ("fully_connected", ("fc/kernel", "fc/bias"), ["MatMul + BiasAdd"]),
    ("scale_and_shift", ("bn_fc/gamma", "bn_fc/beta"), ["tf.nn.batch_normalization"]),
    ("fully_connected", ("logits/kernel", "logits/bias"), ["MatMul + BiasAdd"]),
]


def test_tf_layers_model_is_registered_and_trains(tf_behavior):
    layers = _layers()
    rng = np.random.RandomState(0)
    images = rng.randn(8, 6, 6, 2).astype(np.float32)
    labels = rng.randint(0, 3, size=8)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        logits, loss = _model(layers)
        layer_collection = kfac.LayerCollection()
        layer_collection.register_categorical_predictive_distribution(logits)
        registrations = layer_collection.auto_register_layers()
        assert _summary(registrations) == EXPECTED
        optimizer = kfac.PeriodicInvCovUpdateKfacOpt(
            invert_every=1,
            learning_rate=0.02,
            cov_ema_decay=0.9,
            damping=0.1,
            layer_collection=layer_collection,
            momentum=0.9,
        )
        update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)  # moving averages
        with tf.control_dependencies(update_ops):
            train_op = optimizer.minimize(loss)
        feed = {"images:0": images, "labels:0": labels}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            losses = [sess.run([train_op, loss], feed)[1] for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0]
