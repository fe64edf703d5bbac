"""`LayerCollection.layer_registrations` and `summary()`."""

import math

import tensorflow.compat.v1 as tf

import kfac


def _collection():
    x = tf.zeros([4, 3], name="x")
    images = tf.zeros([4, 5, 5, 2], name="images")
    ids = tf.zeros([4], tf.int32, name="ids")
    layer_collection = kfac.LayerCollection()
    weights = tf.get_variable("fc/w", [3, 2])
    bias = tf.get_variable("fc/b", [2])
    dense = tf.matmul(x, weights) + bias
    layer_collection.register_fully_connected((weights, bias), x, dense)
    layer_collection.register_fully_connected((weights, bias), x, dense, reuse=True)
    kernel = tf.get_variable("conv/k", [3, 3, 2, 4])
    conv = tf.nn.conv2d(images, kernel, [1, 1, 1, 1], "SAME")
    layer_collection.register_conv2d(
        kernel, [1, 1, 1, 1], "SAME", images, conv, approx="diagonal"
    )
    table = tf.get_variable("emb", [7, 3])
    rows = tf.gather(table, ids)
    layer_collection.register_embedding(table, ids, rows)
    recurrent = tf.get_variable("rnn/w", [3, 3])
    steps = [tf.matmul(x, recurrent), tf.matmul(tf.tanh(x), recurrent)]
    layer_collection.register_fully_connected_multi(recurrent, [x, tf.tanh(x)], steps)
    gate = tf.get_variable("gate", [2, 2])
    layer_collection.register_generic(gate, 4)
    gamma, beta = tf.get_variable("bn/gamma", [2]), tf.get_variable("bn/beta", [2])
    layer_collection.register_scale_and_shift(
        (gamma, beta), dense, dense * gamma + beta
    )
    layer_collection.register_categorical_predictive_distribution(dense, name="logits")
    layer_collection.register_block(tf.get_variable("raw", [2]), "a raw block")
    return layer_collection, locals()


def test_records_give_kind_approximation_towers_and_uses(graph):
    layer_collection, v = _collection()
    records = list(layer_collection.layer_registrations.values())
    summary = [
        (r.kind, r.approximation, r.params, len(r.towers), r.uses) for r in records
    ]
    assert summary[:5] == [
        ("fully_connected", "kron", (v["weights"], v["bias"]), 2, 1),
        ("conv2d", "diagonal", v["kernel"], 1, 1),
        ("embedding", "kron", v["table"], 1, 1),
        ("fully_connected_multi", "kron_indep", v["recurrent"], 1, 2),
        ("generic", "full", v["gate"], 1, math.inf),
    ]
    assert summary[5] == (
        "scale_and_shift",
        "full",
        (v["gamma"], v["beta"]),
        1,
        1,
    )
    assert records[0].towers[1] == (v["x"], v["dense"])
    assert records[4].towers == [(4,)]
    assert records[0].block is layer_collection.fisher_blocks[(v["weights"], v["bias"])]
    assert len(records) == len(layer_collection.fisher_blocks) - 1  # not register_block


def test_summary_lists_every_block_and_loss(graph):
    layer_collection, _ = _collection()
    assert str(layer_collection) == layer_collection.summary()
    assert layer_collection.summary().split("\n") == [
        "LayerCollection 'LayerCollection': 7 blocks, 1 losses",
        "  1. fully_connected (kron): fc/w:0 [3, 2], fc/b:0 [2] | towers 2, uses 1 "
        "| factors A 4x4, G 2x2",
        "  2. conv2d (diagonal): conv/k:0 [3, 3, 2, 4] | towers 1, uses 1 | factors "
        "diagonal 72",
        "  3. embedding (kron): emb:0 [7, 3] | towers 1, uses 1 | factors A 7 "
        "(diagonal), G 3x3",
        "  4. fully_connected_multi (kron_indep): rnn/w:0 [3, 3] | towers 1, uses 2 "
        "| factors A 3x3, G 3x3",
        "  5. generic (full): gate:0 [2, 2] | towers 1, uses generic | factors F 4x4",
        "  6. scale_and_shift (full): bn/gamma:0 [2], bn/beta:0 [2] | towers 1, uses "
        "1 | factors F 4x4",
        "  (1 blocks inserted with register_block directly)",
        "  loss 'logits': CategoricalLogitsNegativeLogProbLoss of add:0 [4, 2] | "
        "towers 1",
    ]
