"""`LayerCollection.auto_register_layers` registers what a hand registration does.

Each example model is built twice (tests/auto_registration_helpers.py): with
the model code's own registrations, and with only its loss registered and
the layers found by the scan. The blocks must be the same (type, parameters,
the tensors of every tower, uses), and one K-FAC step from the same weights
must give the same weights.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac.examples import convnet
from kfac.examples import embedding_text
from kfac.examples import mlp
from kfac.examples import rnn_mnist
from tests import auto_registration_helpers as helpers

BATCH = 8


def _labels(name="labels", size=BATCH):
    return tf.placeholder(tf.int64, [size], name=name)


def mlp_model(layer_collection):
    examples = tf.placeholder(tf.float32, [BATCH, 784], name="examples")
    return mlp.build_model(examples, _labels(), 10, layer_collection)[0]


def convnet_model(layer_collection):
    examples = tf.placeholder(tf.float32, [BATCH, 28, 28, 1], name="examples")
    return convnet.build_model(examples, _labels(), 10, layer_collection)[0]


def rnn_model(layer_collection):
    sequences = tf.placeholder(tf.float32, [BATCH, 6, 5], name="examples")
    return rnn_mnist.build_model(sequences, _labels(), layer_collection, hidden_size=7)[
        0
    ]


def embedding_model(registration):
    def build(layer_collection):
        ids = tf.placeholder(tf.int32, [BATCH, 4], name="examples")
        return embedding_text.build_model(
            ids,
            _labels(),
            layer_collection,
            registration=registration,
            vocab_size=12,
            embedding_dim=5,
            num_classes=3,
        )[0]

    return build


def two_tower_mlp(layer_collection):
    examples = tf.placeholder(tf.float32, [2 * BATCH, 784], name="examples")
    labels = _labels(size=2 * BATCH)
    losses = []
    for tower, (x, y) in enumerate(zip(tf.split(examples, 2), tf.split(labels, 2))):
        with tf.variable_scope("model", reuse=tower > 0):
            losses.append(mlp.build_model(x, y, 10, layer_collection)[0])
    return tf.add_n(losses) / 2


def _feed(rng, size=BATCH, shape=(784,), classes=10, ids=None):
    if ids is not None:
        examples = rng.randint(0, ids, size=(size,) + shape)
    else:
        examples = rng.randn(size, *shape).astype(np.float32)
    return {"examples:0": examples, "labels:0": rng.randint(0, classes, size=size)}


MODELS = {
    "mlp": (mlp_model, dict()),
    "convnet": (convnet_model, dict(shape=(28, 28, 1))),
    "rnn": (rnn_model, dict(shape=(6, 5))),
    "embedding_bag": (embedding_model("bag"), dict(shape=(4,), ids=12, classes=3)),
    "embedding_multi": (
        embedding_model("multi"),
        dict(shape=(4,), ids=12, classes=3),
    ),
    "two_tower_mlp": (two_tower_mlp, dict(size=2 * BATCH)),
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_auto_registration_gives_the_hand_registrations_blocks(model, tf_behavior):
    hand, auto = helpers.build_pair(MODELS[model][0])
    expected = helpers.describe(hand.layer_collection)
    assert expected  # the model registers something
    assert helpers.describe(auto.layer_collection) == expected


@pytest.mark.parametrize("model", sorted(MODELS))
def test_auto_registration_gives_the_hand_registrations_step(model, rng):
    build_fn, feed_options = MODELS[model]
    hand, auto = helpers.build_pair(build_fn)
    helpers.assert_same_step(hand, auto, _feed(rng, **feed_options))


def test_two_towers_become_towers_of_one_block():
    _, auto = helpers.build_pair(two_tower_mlp)
    for registration in auto.registrations:
        assert (registration.num_towers, registration.uses_per_tower) == (2, 1)
    with auto.graph.as_default():
        blocks = list(auto.layer_collection.get_blocks())
    assert [block.num_registered_towers for block in blocks] == [2] * 4


def test_unrolled_rnn_becomes_one_multi_use_block():
    _, auto = helpers.build_pair(rnn_model)
    recurrent, output = auto.registrations
    assert recurrent.kind == "fully_connected"
    assert recurrent.uses_per_tower == 6
    assert recurrent.patterns == ["MatMul + BiasAdd"] * 6
    assert output.uses_per_tower == 1
