"""The registration linter: one model per mistake, and the message it gets."""

import warnings

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import kfac
from kfac.ops.layer_collection import RegistrationWarning

BATCH = 4


def _dense(name, x, size, seed=0):
    initial = np.random.RandomState(seed).randn(int(x.shape[1]), size) * 0.5
    weights = tf.get_variable(name + "/w", initializer=initial.astype(np.float32))
    bias = tf.get_variable(name + "/b", [size], initializer=tf.zeros_initializer())
    return tf.nn.bias_add(tf.matmul(x, weights), bias, name=name + "/pre"), (
        weights,
        bias,
    )


def _classifier(reduce=tf.reduce_mean):
    """`(layer collection, x, logits, loss, params)` of a registered softmax layer."""
    x = tf.placeholder(tf.float32, [BATCH, 3], name="x")
    labels = tf.placeholder(tf.int64, [BATCH], name="labels")
    logits, params = _dense("fc", x, 2)
    loss = reduce(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
        name="loss",
    )
    layer_collection = kfac.LayerCollection()
    layer_collection.register_fully_connected(params, x, logits)
    layer_collection.register_categorical_predictive_distribution(logits, name="logits")
    return layer_collection, x, logits, loss, params


def _messages(problems):
    return [(p.code, p.message) for p in problems]


def test_a_correct_registration_has_no_problems(graph):
    layer_collection, _, _, loss, _ = _classifier()
    assert layer_collection.lint_registration(loss) == []


def test_the_same_logits_registered_twice(graph):
    layer_collection, _, logits, loss, _ = _classifier()
    layer_collection.register_categorical_predictive_distribution(logits, name="again")
    assert _messages(layer_collection.lint_registration(loss)) == [
        (
            "duplicate_loss",
            "fc/pre:0 is registered as the input of two losses ('logits' tower 0 "
            "and 'again' tower 0): the Fisher counts it twice.",
        )
    ]


def test_a_distribution_the_loss_does_not_use(graph):
    layer_collection, x, _, loss, _ = _classifier()
    other, _ = _dense("other", x, 2, seed=1)
    layer_collection.register_categorical_predictive_distribution(other, name="other")
    problems = _messages(layer_collection.lint_registration(loss))
    assert (
        "loss_not_used",
        "The training loss loss:0 does not depend on other/pre:0, the input of the "
        "registered loss 'other' (tower 0).",
    ) in problems


def test_logits_with_no_registered_distribution(graph):
    layer_collection, x, _, loss, _ = _classifier()
    labels = tf.placeholder(tf.float32, [BATCH, 2])
    extra, extra_params = _dense("extra", x, 2, seed=2)
    layer_collection.register_fully_connected(extra_params, x, extra)
    extra_loss = tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=extra)
    )
    problems = _messages(layer_collection.lint_registration(loss + extra_loss))
    assert problems == [
        (
            "unregistered_logits",
            "The training loss add:0 depends on the logits extra/pre:0 (through "
            "Log1p op 'logistic_loss/Log1p') but no predictive distribution is "
            "registered for them.",
        )
    ]


def test_a_summed_loss(graph):
    layer_collection, _, _, loss, _ = _classifier(reduce=tf.reduce_sum)
    assert _messages(layer_collection.lint_registration(loss)) == [
        (
            "loss_scale",
            "The cross-entropy of fc/pre:0 (op "
            "'SparseSoftmaxCrossEntropyWithLogits/SparseSoftmaxCrossEntropyWithLogits'"
            ") is summed into the loss loss:0 with no mean: K-FAC assumes the mean "
            "over the batch of the registered negative log-likelihood, so every step "
            "is scaled by the batch size.",
        )
    ]


@pytest.mark.parametrize(
    "reduce",
    [
        lambda values, name: tf.divide(tf.reduce_sum(values), BATCH, name=name),
        lambda values, name: tf.losses.compute_weighted_loss(values, scope=name),
    ],
)
def test_averaged_losses_are_not_reported(reduce, graph):
    layer_collection, _, _, loss, _ = _classifier(reduce=reduce)
    assert layer_collection.lint_registration(loss) == []


def test_outputs_that_do_not_depend_on_the_layer(graph):
    x = tf.placeholder(tf.float32, [BATCH, 3], name="x")
    logits, params = _dense("fc", x, 2)
    layer_collection = kfac.LayerCollection()
    other_input = tf.placeholder(tf.float32, [BATCH, 3], name="other_input")
    layer_collection.register_fully_connected(params, other_input, logits)
    unrelated = tf.zeros([BATCH, 2], name="unrelated")
    weights = tf.get_variable("w2", [2, 2])
    layer_collection.register_fully_connected(weights, logits, unrelated)
    layer_collection.register_categorical_predictive_distribution(logits)
    assert _messages(layer_collection.lint_registration()) == [
        (
            "layer_not_connected",
            "The outputs registered for the fully_connected layer of fc/w:0, fc/b:0 "
            "(tower 0) do not depend on its inputs other_input:0.",
        ),
        (
            "layer_not_connected",
            "The outputs registered for fully_connected (tower 0) do not depend on "
            "its parameter w2:0.",
        ),
        (
            "layer_not_connected",
            "The outputs registered for the fully_connected layer of w2:0 (tower 0) "
            "do not depend on its inputs fc/pre:0.",
        ),
    ]


def test_an_unregistered_variable_names_its_op(tf_behavior):
    with tf.Graph().as_default():
        layer_collection, _, logits, _, _ = _classifier()
        temperature = tf.get_variable(
            "temperature", [], initializer=tf.ones_initializer()
        )
        loss = tf.reduce_mean(tf.nn.softmax(logits * temperature, name="scaled"))
        (problem,) = [
            p
            for p in layer_collection.lint_registration(loss)
            if p.code == "unregistered_variable"
        ]
        assert problem.message == (
            "The loss Mean:0 depends on the trainable variable temperature:0 (used by "
            "Mul op 'mul'), which no registered layer covers."
        )


def test_check_registration_warns_or_raises(graph):
    layer_collection, _, logits, loss, params = _classifier(reduce=tf.reduce_sum)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer_collection.check_registration(params, loss=loss, lint="warn")
    assert [w.category for w in caught] == [RegistrationWarning]
    assert str(caught[0].message).startswith(
        "[loss_scale] The cross-entropy of fc/pre:0"
    )
    with pytest.raises(ValueError) as raised:
        layer_collection.check_registration(params, loss=loss, lint="raise")
    assert str(raised.value).startswith(
        "Found the following problems with the K-FAC registration:\n\t[loss_scale] "
    )


def test_the_optimizer_lints_each_loss_once(graph):
    layer_collection, _, _, loss, params = _classifier(reduce=tf.reduce_sum)
    optimizer = kfac.KfacOptimizer(0.1, 0.9, 0.1, layer_collection, var_list=params)
    optimizer.make_ops_and_vars()
    with pytest.warns(RegistrationWarning, match=r"^\[loss_scale\]"):
        optimizer.compute_gradients(loss, var_list=params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.compute_gradients(loss, var_list=params)  # seen: no warning
    strict = kfac.KfacOptimizer(
        0.1, 0.9, 0.1, layer_collection, var_list=params, lint="raise", name="strict"
    )
    with pytest.raises(ValueError, match=r"\[loss_scale\]"):
        strict.compute_gradients(loss, var_list=params)
    quiet = kfac.KfacOptimizer(
        0.1, 0.9, 0.1, layer_collection, var_list=params, lint=False, name="quiet"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.compute_gradients(loss, var_list=params)
    with pytest.raises(ValueError, match="Unsupported lint 'loud'"):
        kfac.KfacOptimizer(
            0.1, 0.9, 0.1, layer_collection, var_list=params, lint="loud"
        )


def test_check_loss_scale_measures_the_convention(graph):
    rng = np.random.RandomState(0)
    feed_x = rng.randn(BATCH, 3).astype(np.float32)
    targets = rng.randn(BATCH, 2).astype(np.float32)
    x = tf.placeholder(tf.float32, [BATCH, 3], name="x")
    outputs, params = _dense("fc", x, 2)
    layer_collection = kfac.LayerCollection()
    layer_collection.register_fully_connected(params, x, outputs)
    layer_collection.register_normal_predictive_distribution(
        outputs, var=0.5, targets=targets, name="mse"
    )
    squared = tf.square(outputs - targets)
    mean_sum = tf.reduce_sum(squared) / BATCH  # var=0.5's convention
    summed = tf.reduce_sum(squared)
    half = 0.5 * tf.reduce_sum(squared) / BATCH  # var=1.0's convention
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        feed = {x: feed_x}
        assert layer_collection.check_loss_scale(sess, mean_sum, feed) == []
        (problem,) = layer_collection.check_loss_scale(sess, summed, feed)
        assert problem.message == (
            "The loss's gradient w.r.t. fc/pre:0 (loss 'mse', tower 0) is 4 times "
            "the batch mean of the registered negative log-likelihood's (4 "
            "examples). It looks summed over the batch: use a mean."
        )
        (problem,) = layer_collection.check_loss_scale(sess, half, feed)
        assert "is 0.5 times" in problem.message
        assert problem.message.endswith("for a squared error, the registered variance.")


def test_the_error_at_minimize_names_the_op_of_an_unregistered_variable(graph):
    layer_collection, x, logits, _, params = _classifier()
    extra = tf.get_variable("extra", [3, 2])
    total = logits + tf.matmul(x, extra, name="extra_matmul")
    layer_collection.register_categorical_predictive_distribution(total, name="total")
    with pytest.raises(ValueError) as raised:
        layer_collection.check_registration(list(params) + [extra])
    assert str(raised.value) == (
        "Found the following errors with variable registration:\n\tVariable "
        "extra:0 is not registered (used by MatMul op 'extra_matmul')."
    )
