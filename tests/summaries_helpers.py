"""A small float64 model with a K-FAC optimizer, and reading event files back
(the summaries and hook tests)."""

import glob
import os

import numpy as np
import tensorflow.compat.v1 as tf

import kfac

BATCH, IN, HIDDEN, CLASSES = 8, 5, 6, 4
LR, DAMPING, DECAY = 0.1, 0.05, 0.9


def read_scalars(logdir):
    """`{tag: value}` of the last event holding each tag in `logdir`."""
    values = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.*"))):
        for event in tf.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    values[value.tag] = value.simple_value
    return values


class TwoLayerModel(object):
    """fc1 (weights + bias, tanh) → fc2 (weights) → softmax, float64.

    Fed through placeholders (`feed()`), or from `inputs=(x, labels)`.
    """

    def __init__(self, seed=0, inputs=None, **optimizer_kwargs):
        rng = np.random.RandomState(seed)
        if inputs is None:
            self.x = tf.placeholder(tf.float64, [BATCH, IN])
            self.labels = tf.placeholder(tf.int32, [BATCH])
        else:
            self.x = tf.cast(inputs[0], tf.float64)
            self.labels = tf.cast(inputs[1], tf.int32)
        init = tf.constant_initializer
        self.w1 = tf.get_variable("fc1/weights", initializer=init(
            rng.randn(IN, HIDDEN) * 0.5), shape=[IN, HIDDEN], dtype=tf.float64)
        self.b1 = tf.get_variable("fc1/bias", initializer=init(rng.randn(HIDDEN) * 0.1),
                                  shape=[HIDDEN], dtype=tf.float64)
        self.w2 = tf.get_variable("fc2/weights", initializer=init(
            rng.randn(HIDDEN, CLASSES) * 0.5), shape=[HIDDEN, CLASSES],
            dtype=tf.float64)
        pre1 = tf.matmul(self.x, self.w1) + self.b1
        hidden = tf.tanh(pre1)
        logits = tf.matmul(hidden, self.w2)
        self.layer_collection = kfac.LayerCollection()
        self.layer_collection.register_fully_connected((self.w1, self.b1), self.x, pre1)
        self.layer_collection.register_fully_connected(self.w2, hidden, logits)
        self.layer_collection.register_categorical_predictive_distribution(logits)
        self.loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self.labels, logits=logits))
        self.variables = [self.w1, self.b1, self.w2]
        self.gradients = tf.gradients(self.loss, self.variables)
        kwargs = dict(learning_rate=LR, cov_ema_decay=DECAY, damping=DAMPING,
                      layer_collection=self.layer_collection, momentum=0.5,
                      batch_size=BATCH)
        kwargs.update(optimizer_kwargs)
        self.optimizer = kfac.KfacOptimizer(**kwargs)
        self.rng = rng

    def feed(self):
        return {self.x: self.rng.randn(BATCH, IN),
                self.labels: self.rng.randint(0, CLASSES, size=BATCH)}

    def factors(self):
        """`[(A, G)]` of each layer (the blocks' factor covariances)."""
        blocks = list(self.layer_collection.get_blocks())
        return [(block._input_factor.get_cov(), block._output_factor.get_cov())
                for block in blocks]


def periodic_optimizer(model, **kwargs):
    """A `PeriodicInvCovUpdateKfacOpt` (inverses every 2 steps) on `model`."""
    return kfac.PeriodicInvCovUpdateKfacOpt(
        invert_every=2, learning_rate=LR, cov_ema_decay=DECAY, damping=DAMPING,
        layer_collection=model.layer_collection, momentum=0.5, **kwargs)
