"""Tests for kfac.ops.loss_functions: values, targets, gradients and sampling.

Against the numpy references of loss_function_references.py.
"""

import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from loss_function_references import ALL
from loss_function_references import CAT_LOGITS
from loss_function_references import MEAN
from loss_function_references import SPECS
from loss_function_references import VAR
from loss_function_references import VARIANCE
from loss_function_references import fisher_from_outcomes
from loss_function_references import log_softmax
from loss_function_references import run
from loss_function_references import sigmoid

from kfac.ops import loss_functions as lf

# ---------------------------------------------------------------------------
# Values, targets and gradients.


@pytest.mark.parametrize("name", ALL)
def test_evaluate_is_the_summed_negative_log_likelihood(name, graph):
    spec = SPECS[name]
    value = run(spec.make(targets=spec.targets).evaluate())
    np.testing.assert_allclose(value, spec.nll(spec.targets), rtol=1e-10)


def test_evaluate_anchors(graph):
    categorical = lf.CategoricalLogitsNegativeLogProbLoss(
        tf.constant([[1.0, 2.0], [3.0, 4.0]]), targets=tf.constant([0, 1])
    )
    normal = lf.NormalMeanNegativeLogProbLoss(
        tf.constant([[1.0, 2.0], [3.0, 4.0]]),
        var=4.0,
        targets=tf.constant([[3.0, 1.0], [4.0, 2.0]]),
    )
    values = run([categorical.evaluate(), normal.evaluate()])
    np.testing.assert_allclose(values, [1.6265233, 7.6983433], rtol=1e-6)


def test_onehot_evaluate_with_soft_targets(graph):
    targets = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    loss = lf.OnehotCategoricalLogitsNegativeLogProbLoss(CAT_LOGITS, targets=targets)
    np.testing.assert_allclose(
        run(loss.evaluate()), -np.sum(targets * log_softmax(CAT_LOGITS))
    )


@pytest.mark.parametrize("name", ALL)
def test_evaluate_without_targets_raises(name, graph):
    loss = SPECS[name].make()
    assert loss.targets is None
    with pytest.raises(ValueError, match="targets unspecified"):
        loss.evaluate()


def test_targets_property_returns_the_constructor_value(graph):
    targets = np.array([1, 0])
    loss = lf.CategoricalLogitsNegativeLogProbLoss(CAT_LOGITS, targets=targets)
    assert loss.targets is targets
    assert loss.inputs is loss.params


def test_evaluate_stops_gradients_to_targets(graph):
    mean = tf.constant(MEAN)
    targets = tf.constant(np.ones((2, 2))) * 2.0
    loss = lf.NormalMeanNegativeLogProbLoss(mean, var=VAR, targets=targets)
    grad_targets, grad_mean = tf.gradients(loss.evaluate(), [targets, mean])
    assert grad_targets is None
    np.testing.assert_allclose(run(grad_mean), (MEAN - 2.0) / VAR)


def test_tensor_inputs_keep_their_identity(graph):
    logits = tf.constant(CAT_LOGITS)
    mean, variance = tf.constant(MEAN), tf.constant(VARIANCE)
    assert lf.CategoricalLogitsNegativeLogProbLoss(logits).inputs is logits
    assert lf.MultiBernoulliNegativeLogProbLoss(logits).inputs is logits
    assert lf.NormalMeanNegativeLogProbLoss(mean).inputs is mean
    pair = lf.NormalMeanVarianceNegativeLogProbLoss(mean, variance).inputs
    assert pair[0] is mean and pair[1] is variance


def test_variable_logits(tf_behavior, graph):
    logits = tf.Variable(CAT_LOGITS)
    loss = lf.CategoricalLogitsNegativeLogProbLoss(logits, targets=np.array([2, 0]))
    grad = tf.gradients(loss.evaluate(), logits)[0]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        value, grad = sess.run([loss.evaluate(), grad])
    p = np.exp(log_softmax(CAT_LOGITS))
    np.testing.assert_allclose(value, -log_softmax(CAT_LOGITS)[[0, 1], [2, 0]].sum())
    np.testing.assert_allclose(grad, p - np.eye(3)[[2, 0]])


@pytest.mark.parametrize("name", ALL)
def test_evaluate_on_sample_uses_the_default_seed(name, graph):
    spec = SPECS[name]
    loss = spec.make(seed=1234)
    # Ops with the same op-level seed draw the same numbers.
    sample = loss.sample(1234)
    on_default, on_explicit = loss.evaluate_on_sample(), loss.evaluate_on_sample(1234)
    sample, on_default, on_explicit = run([sample, on_default, on_explicit])
    assert on_default == on_explicit
    np.testing.assert_allclose(on_default, spec.nll(sample), rtol=1e-10)


def test_evaluate_on_sample_gradient_skips_the_sample(graph):
    # d/dmean of the NLL at a fixed sample y is −(y − mean)/var; if the gradient
    # flowed through y = mean + σε it would vanish.
    mean = tf.constant(MEAN)
    loss = lf.NormalMeanNegativeLogProbLoss(mean, var=VAR, seed=5)
    sample = loss.sample(5)
    grad = tf.gradients(loss.evaluate_on_sample(), mean)[0]
    sample, grad = run([sample, grad])
    np.testing.assert_allclose(grad, -(sample - MEAN) / VAR)
    assert np.abs(grad).max() > 1e-3


# ---------------------------------------------------------------------------
# Sampling.


@pytest.mark.parametrize("name", ALL)
def test_sample_shape_and_dtype(name, graph):
    spec = SPECS[name]
    sample = spec.make().sample(3)
    assert sample.dtype == spec.sample_dtype
    assert run(sample).shape == spec.sample_shape


def _tiled(row, num):
    return tf.tile(tf.constant(row[np.newaxis]), [num, 1])


def test_categorical_sample_frequencies(graph):
    num = 20000
    logits = np.array([0.5, -1.0, 2.0])
    ids, onehot = run(
        [
            lf.CategoricalLogitsNegativeLogProbLoss(_tiled(logits, num)).sample(7),
            lf.OnehotCategoricalLogitsNegativeLogProbLoss(_tiled(logits, num)).sample(
                8
            ),
        ]
    )
    p = np.exp(log_softmax(logits))
    np.testing.assert_allclose(np.bincount(ids, minlength=3) / num, p, atol=0.015)
    np.testing.assert_array_equal(onehot.sum(axis=1), 1.0)
    np.testing.assert_allclose(onehot.mean(axis=0), p, atol=0.015)


def test_bernoulli_sample_frequencies(graph):
    num = 20000
    logits = np.array([0.3, -1.2, 2.0])
    sample = run(lf.MultiBernoulliNegativeLogProbLoss(_tiled(logits, num)).sample(9))
    assert set(np.unique(sample)) <= {0, 1}
    np.testing.assert_allclose(sample.mean(axis=0), sigmoid(logits), atol=0.015)


def test_normal_sample_moments(graph):
    num = 20000
    mean, variance = np.array([0.5, -1.0]), np.array([0.4, 2.0])
    normal, normal_mv = run(
        [
            lf.NormalMeanNegativeLogProbLoss(_tiled(mean, num), var=0.4).sample(10),
            lf.NormalMeanVarianceNegativeLogProbLoss(
                _tiled(mean, num), _tiled(variance, num)
            ).sample(11),
        ]
    )
    np.testing.assert_allclose(normal.mean(axis=0), mean, atol=0.03)
    np.testing.assert_allclose(normal.var(axis=0), [0.4, 0.4], rtol=0.05)
    np.testing.assert_allclose(normal_mv.mean(axis=0), mean, atol=0.05)
    np.testing.assert_allclose(normal_mv.var(axis=0), variance, rtol=0.05)


@pytest.mark.parametrize("name", ALL)
def test_monte_carlo_fisher_from_sampled_gradients(name, graph):
    # The "gradients" estimation mode: per-row gradients of evaluate_on_sample
    # have second moment F (rows share the parameters of row 0 of the spec).
    spec = SPECS[name]
    num = 4000
    row = spec.flat_params[0]
    loss = spec.make(_tiled(row, num), seed=1)
    grads = tf.gradients(loss.evaluate_on_sample(), tf.nest.flatten(loss.inputs))
    grads = spec.from_inputs(run(grads)) if len(grads) > 1 else run(grads[0])
    products = grads[:, :, np.newaxis] * grads[:, np.newaxis, :]
    empirical = products.mean(axis=0)
    standard_error = products.std(axis=0) / math.sqrt(num)
    fisher = fisher_from_outcomes(spec.log_prob, row, spec.outcomes(row))
    # Within 4 standard errors of the Monte Carlo estimate, entry by entry.
    np.testing.assert_array_less(np.abs(empirical - fisher), 4 * standard_error + 1e-9)


def test_sampling_from_non_finite_logits_stays_in_range(graph):
    logits = np.array(
        [
            [np.nan, np.nan, np.nan],
            [-np.inf, -np.inf, -np.inf],
            [np.inf, 0.0, 0.0],
            [np.nan, 0.0, 1.0],
            [-np.inf, 0.0, -np.inf],
        ]
    )
    ids, onehot, bern, normal, on_sample = run(
        [
            lf.CategoricalLogitsNegativeLogProbLoss(tf.tile(logits, [50, 1])).sample(1),
            lf.OnehotCategoricalLogitsNegativeLogProbLoss(logits).sample(2),
            lf.MultiBernoulliNegativeLogProbLoss(logits).sample(3),
            lf.NormalMeanNegativeLogProbLoss(logits).sample(4),
            lf.CategoricalLogitsNegativeLogProbLoss(logits).evaluate_on_sample(5),
        ]
    )
    assert ids.min() >= 0 and ids.max() <= 2
    # Valid rows keep their distribution: a row with only class 1 finite.
    np.testing.assert_array_equal(ids.reshape(50, 5)[:, 4], 1)
    np.testing.assert_array_equal(onehot.sum(axis=1), 1.0)
    assert set(np.unique(bern)) <= {0, 1}
    assert np.all(np.isfinite(normal))
    # The loss itself still reports the problem (the optimizer skips the step).
    assert not np.isfinite(on_sample)
