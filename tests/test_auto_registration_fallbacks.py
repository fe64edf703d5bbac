"""What `auto_register_layers` does with variables no pattern fits, and its errors."""

import logging

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import kfac
from kfac.ops import fisher_blocks
from kfac.ops import graph_search

LOGGER = "kfac.auto_register"


def _dense(name, x, size, seed=0, bias=True):
    initial = np.random.RandomState(seed).randn(int(x.shape[1]), size) * 0.3
    weights = tf.get_variable(name + "/w", initializer=initial.astype(np.float32))
    if not bias:
        return tf.matmul(x, weights), weights
    b = tf.get_variable(name + "/b", [size], initializer=tf.zeros_initializer())
    return tf.nn.bias_add(tf.matmul(x, weights), b), (weights, b)


def _block_types(layer_collection):
    with layer_collection.graph.as_default():
        return [type(block).__name__ for block in layer_collection.get_blocks()]


def test_unmatched_variable_falls_back_to_a_generic_diagonal_block_and_is_logged(
    graph, caplog
):
    x = tf.placeholder(tf.float32, [4, 3])
    pre, _ = _dense("fc", x, 2)
    gate = tf.get_variable("gate", [2], initializer=tf.zeros_initializer())
    logits = pre * tf.exp(gate)  # Exp of a variable: no layer pattern
    layer_collection = kfac.LayerCollection()
    layer_collection.register_categorical_predictive_distribution(logits)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        registrations = layer_collection.auto_register_layers()
    assert [r.kind for r in registrations] == ["fully_connected", "generic"]
    fallback = registrations[1]
    assert fallback.params is gate
    assert fallback.reason == (
        "no layer pattern matches its use as gate (input 0 of Exp op 'Exp')"
    )
    assert isinstance(
        layer_collection.fisher_blocks[gate], fisher_blocks.NaiveDiagonalFB
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "auto_register_layers: gate registered as a generic (diagonal) block: no "
        "layer pattern matches its use as gate (input 0 of Exp op 'Exp')"
    ]
    # The generic block's batch size is the loss input's first dimension.
    assert layer_collection.fisher_blocks[gate]._batch_sizes == [4]


def test_fallback_takes_the_linked_approximation_and_the_given_batch_size(graph):
    x = tf.placeholder(tf.float32, [None, 3])
    scale = tf.get_variable("scale", [], initializer=tf.ones_initializer())
    logits, _ = _dense("fc", x * tf.square(scale), 2)
    layer_collection = kfac.LayerCollection()
    layer_collection.register_categorical_predictive_distribution(logits)
    layer_collection.define_linked_parameters(scale, "full")
    layer_collection.auto_register_layers(batch_size=16)
    block = layer_collection.fisher_blocks[scale]
    assert isinstance(block, fisher_blocks.FullFB)
    assert block._batch_sizes == [16]


def test_mixed_uses_fall_back_and_say_which_layers(graph):
    """A table used as an embedding and as a transposed softmax matrix (tied)."""
    ids = tf.placeholder(tf.int32, [4])
    table = tf.get_variable("table", [6, 3])
    hidden = tf.tanh(tf.gather(table, ids))
    logits = tf.matmul(hidden, table, transpose_b=True)
    layer_collection = kfac.LayerCollection()
    layer_collection.register_categorical_predictive_distribution(logits)
    (registration,) = layer_collection.auto_register_layers()
    assert registration.kind == "generic"
    assert registration.reason == (
        "no layer pattern matches its use as table (input 1 of MatMul op 'MatMul')"
    )


def test_weights_used_with_and_without_a_bias_are_ambiguous(graph):
    x = tf.placeholder(tf.float32, [4, 3])
    weights = tf.get_variable("w", [3, 3])
    bias = tf.get_variable("b", [3])
    first = tf.nn.bias_add(tf.matmul(x, weights), bias)
    second = tf.matmul(tf.tanh(first), weights)
    layer_collection = kfac.LayerCollection()
    layer_collection.register_categorical_predictive_distribution(second)
    with pytest.raises(graph_search.AmbiguousRegistrationError) as raised:
        layer_collection.auto_register_layers()
    assert str(raised.value) == (
        "auto_register_layers: variable w matches several incompatible layer "
        "patterns: fully_connected (w, b) (MatMul + BiasAdd at op 'MatMul'); "
        "fully_connected (w) (MatMul at op 'MatMul_1'). Register it by hand "
        "before calling auto_register_layers (the scan skips registered variables)."
    )
    assert kfac.AmbiguousRegistrationError is graph_search.AmbiguousRegistrationError
    assert not layer_collection.fisher_blocks  # nothing registered


def test_a_bias_after_two_layers_is_ambiguous(graph):
    x = tf.placeholder(tf.float32, [4, 3])
    bias = tf.get_variable("b", [2])
    first, _ = _dense("one", x, 2, bias=False)
    second, _ = _dense("two", x, 2, bias=False)
    logits = (first + bias) * (second + bias)
    layer_collection = kfac.LayerCollection()
    layer_collection.register_categorical_predictive_distribution(logits)
    with pytest.raises(graph_search.AmbiguousRegistrationError, match="variable b "):
        layer_collection.auto_register_layers()


def test_hand_registrations_are_kept_and_their_variables_skipped(graph):
    x = tf.placeholder(tf.float32, [4, 3])
    hidden, first_params = _dense("one", x, 5)
    logits, _ = _dense("two", tf.tanh(hidden), 2, seed=1)
    layer_collection = kfac.LayerCollection()
    layer_collection.register_fully_connected(
        first_params, x, hidden, approx="diagonal"
    )
    hand_block = layer_collection.fisher_blocks[first_params]
    layer_collection.register_categorical_predictive_distribution(logits)
    registrations = layer_collection.auto_register_layers()
    assert [r.params[0].op.name for r in registrations] == ["two/w"]
    assert layer_collection.fisher_blocks[first_params] is hand_block
    assert _block_types(layer_collection) == [
        "FullyConnectedDiagonalFB",
        "FullyConnectedKFACBasicFB",
    ]


def test_var_list_limits_the_scan_and_unused_variables_are_skipped(graph, caplog):
    x = tf.placeholder(tf.float32, [4, 3])
    hidden, _ = _dense("one", x, 5)
    logits, (weights, bias) = _dense("two", tf.tanh(hidden), 2, seed=1)
    tf.get_variable("unused", [2])
    layer_collection = kfac.LayerCollection()
    layer_collection.register_categorical_predictive_distribution(logits)
    registrations = layer_collection.auto_register_layers(var_list=[weights, bias])
    assert [r.params for r in registrations] == [(weights, bias)]
    everything = kfac.LayerCollection()
    everything.register_categorical_predictive_distribution(logits)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert len(everything.auto_register_layers()) == 2
    assert (
        "auto_register_layers: unused is not used by the registered losses; not "
        "registered." in [r.getMessage() for r in caplog.records]
    )


def test_auto_registration_needs_a_registered_loss(graph):
    with pytest.raises(ValueError, match="register the model's predictive"):
        kfac.LayerCollection().auto_register_layers()


def test_finalize_blocks_every_later_registration(graph):
    x = tf.placeholder(tf.float32, [4, 3])
    logits, params = _dense("fc", x, 2)
    layer_collection = kfac.LayerCollection()
    layer_collection.register_categorical_predictive_distribution(logits)
    layer_collection.finalize()
    assert layer_collection.is_finalized
    message = (
        "LayerCollection 'LayerCollection' is finalized: cannot {} after "
        "finalize() was called."
    )
    attempts = [
        (
            "register a layer",
            lambda: layer_collection.register_fully_connected(params, x, logits),
        ),
        (
            "register a loss",
            lambda: layer_collection.register_normal_predictive_distribution(logits),
        ),
        ("link parameters", lambda: layer_collection.define_linked_parameters(params)),
        ("auto-register layers", layer_collection.auto_register_layers),
    ]
    for action, attempt in attempts:
        with pytest.raises(ValueError) as raised:
            attempt()
        assert str(raised.value) == message.format(action)
    assert not layer_collection.fisher_blocks
    assert len(layer_collection.losses) == 1


def test_register_layers_is_the_collections_method(graph):
    x = tf.placeholder(tf.float32, [4, 3])
    logits, params = _dense("fc", x, 2)
    layer_collection = kfac.LayerCollection()
    layer_collection.register_categorical_predictive_distribution(logits)
    (registration,) = graph_search.register_layers(layer_collection)
    assert registration.params == params
    assert registration.kind == "fully_connected"


def test_uses_inside_a_while_loop_fall_back(tf_behavior):
    """The loop body's reads go through `Enter` (v1) or a function (v2): a fallback."""
    with tf.Graph().as_default():
        _check_while_loop_fallback()


def _check_while_loop_fallback():
    x = tf.placeholder(tf.float32, [4, 3])
    weights = tf.get_variable("w", [3, 3])
    _, state = tf.while_loop(
        lambda i, h: i < 2,
        lambda i, h: (i + 1, tf.tanh(tf.matmul(h, weights))),
        [0, x],
    )
    logits, _ = _dense("fc", state, 2)
    layer_collection = kfac.LayerCollection()
    layer_collection.register_categorical_predictive_distribution(logits)
    registrations = layer_collection.auto_register_layers()
    kinds = {r.params if r.kind == "generic" else None: r.kind for r in registrations}
    assert kinds[weights] == "generic"
