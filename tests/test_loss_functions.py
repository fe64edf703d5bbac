"""Tests for kfac.ops.loss_functions: Fisher, factor and Hessian products, shapes.

Against the numpy references of loss_function_references.py; values, targets
and sampling are tested in test_loss_functions_values.py.
"""

import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from loss_function_references import ALL
from loss_function_references import CAT_LOGITS
from loss_function_references import NATURAL
from loss_function_references import SPECS
from loss_function_references import VARIANCE
from loss_function_references import dense_factor
from loss_function_references import log_softmax
from loss_function_references import run
from loss_function_references import sigmoid
from tolerances import assert_close

from kfac.ops import loss_functions as lf

# ---------------------------------------------------------------------------
# Fisher and factor products.


@pytest.mark.parametrize("name", ALL)
def test_multiply_fisher_matches_expected_score_outer_product(name, graph):
    spec = SPECS[name]
    vector = np.random.RandomState(1).randn(*spec.flat_params.shape)
    result = spec.from_inputs(run(spec.make().multiply_fisher(spec.to_inputs(vector))))
    expected = [fisher @ v for fisher, v in zip(spec.fisher_rows(), vector)]
    assert_close(result, expected, rtol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_fisher_factor_times_its_transpose_is_the_fisher(name, graph):
    spec = SPECS[name]
    factor = dense_factor(spec, spec.make())
    for row_factor, fisher in zip(factor, spec.fisher_rows()):
        assert_close(
            row_factor @ row_factor.T, fisher, rtol=1e-6
        )


@pytest.mark.parametrize("name", ALL)
def test_fisher_factor_transpose_is_the_transposed_factor(name, graph):
    spec = SPECS[name]
    loss = spec.make()
    factor = dense_factor(spec, loss)
    transpose = dense_factor(spec, loss, transpose=True)
    np.testing.assert_allclose(transpose, np.swapaxes(factor, 1, 2), atol=1e-12)


def test_categorical_factor_is_not_symmetric(graph):
    spec = SPECS["categorical"]
    factor = dense_factor(spec, spec.make())
    p = np.exp(log_softmax(CAT_LOGITS[0]))
    np.testing.assert_allclose(factor[0], np.diag(np.sqrt(p)) - np.outer(p, np.sqrt(p)))
    assert np.abs(factor[0] - factor[0].T).max() > 0.1


@pytest.mark.parametrize("name", ALL)
def test_replicated_one_hot_is_a_column_of_the_factor(name, graph):
    spec = SPECS[name]
    loss = spec.make()
    factor = dense_factor(spec, loss)
    size = spec.flat_params.shape[1]
    columns = run(
        [loss.multiply_fisher_factor_replicated_one_hot((j,)) for j in range(size)]
    )
    for j, column in enumerate(columns):
        np.testing.assert_allclose(
            spec.from_inputs(column), factor[:, :, j], atol=1e-12
        )


@pytest.mark.parametrize("name", ALL)
def test_replicated_one_hot_index_errors(name, graph):
    loss = SPECS[name].make()
    with pytest.raises(AssertionError, match="Length of index"):
        loss.multiply_fisher_factor_replicated_one_hot((0, 1))
    with pytest.raises(ValueError, match="must be in"):
        loss.multiply_fisher_factor_replicated_one_hot((7,))


@pytest.mark.parametrize("name", NATURAL)
def test_natural_params_hessian_products_equal_the_fisher_products(name, graph):
    spec = SPECS[name]
    loss = spec.make()
    vector = np.random.RandomState(2).randn(*spec.flat_params.shape)
    pairs = [
        (loss.multiply_hessian(vector), loss.multiply_fisher(vector)),
        (loss.multiply_hessian_factor(vector), loss.multiply_fisher_factor(vector)),
        (
            loss.multiply_hessian_factor_transpose(vector),
            loss.multiply_fisher_factor_transpose(vector),
        ),
        (
            loss.multiply_hessian_factor_replicated_one_hot((1,)),
            loss.multiply_fisher_factor_replicated_one_hot((1,)),
        ),
    ]
    for hessian_value, fisher_value in run(pairs):
        np.testing.assert_allclose(hessian_value, fisher_value)
    assert (
        loss.hessian_factor_inner_static_shape == loss.fisher_factor_inner_static_shape
    )
    assert isinstance(loss.hessian_factor_inner_static_shape, tf.TensorShape)


@pytest.mark.parametrize("name", NATURAL)
def test_natural_params_fisher_is_the_hessian_of_the_loss(name, graph):
    # For natural parameters the Hessian of the NLL w.r.t. them is the Fisher,
    # whatever the targets: check against tf.hessians of evaluate().
    spec = SPECS[name]
    params = tf.constant(spec.flat_params)
    loss = spec.make(params, targets=spec.targets)
    hessian = run(tf.hessians(loss.evaluate(), params)[0])
    num_rows, size = spec.flat_params.shape
    for b, fisher in enumerate(spec.fisher_rows()):
        assert_close(hessian[b, :, b, :], fisher, rtol=1e-6)
        for other in range(num_rows):
            if other != b:
                np.testing.assert_allclose(hessian[b, :, other, :], 0.0)


def test_normal_mean_variance_has_no_hessian(graph):
    loss = SPECS["normal_mean_variance"].make()
    vecs = (np.ones((2, 2)), np.ones((2, 2)))
    for call in (
        lambda: loss.multiply_hessian(vecs),
        lambda: loss.multiply_hessian_factor(np.ones((2, 4))),
        lambda: loss.multiply_hessian_factor_transpose(vecs),
        lambda: loss.multiply_hessian_factor_replicated_one_hot((0,)),
        lambda: loss.hessian_factor_inner_shape,
        lambda: loss.hessian_factor_inner_static_shape,
    ):
        with pytest.raises(NotImplementedError):
            call()


def test_normal_mean_variance_tuple_and_concat_formats(graph):
    loss = SPECS["normal_mean_variance"].make()
    mean_vec, var_vec = (
        np.array([[1.0, 2.0], [3.0, 4.0]]),
        np.array([[5.0, 6.0], [7.0, 8.0]]),
    )
    fisher, factor_t, factor = run(
        [
            loss.multiply_fisher((mean_vec, var_vec)),
            loss.multiply_fisher_factor_transpose((mean_vec, var_vec)),
            loss.multiply_fisher_factor(np.concatenate([mean_vec, var_vec], axis=1)),
        ]
    )
    assert isinstance(fisher, tuple) and isinstance(factor, tuple)
    np.testing.assert_allclose(fisher[0], mean_vec / VARIANCE)
    np.testing.assert_allclose(fisher[1], var_vec / (2 * VARIANCE**2))
    np.testing.assert_allclose(
        factor_t,
        np.concatenate(
            [mean_vec / np.sqrt(VARIANCE), var_vec / (np.sqrt(2) * VARIANCE)], axis=1
        ),
    )
    np.testing.assert_allclose(factor[0], mean_vec / np.sqrt(VARIANCE))
    np.testing.assert_allclose(factor[1], var_vec / (np.sqrt(2) * VARIANCE))


def test_normal_mean_variance_requires_2d_inputs(graph):
    with pytest.raises(AssertionError, match="2-D mean"):
        lf.NormalMeanVarianceNegativeLogProbLoss(tf.zeros([3]), tf.ones([3, 1]))
    with pytest.raises(ValueError, match="2-D variance"):
        lf.NormalMeanVarianceNegativeLogProbLoss(tf.zeros([3, 1]), tf.ones([1, 3, 1]))


def test_categorical_fisher_broadcasts_over_leading_dims(graph):
    # A single logits vector multiplied by a vector, a [1, C] and a [4, C] stack.
    logits = np.array([1.0, 2.0, 3.0])
    loss = lf.CategoricalLogitsNegativeLogProbLoss(logits)
    p = np.exp(log_softmax(logits))
    fisher = np.diag(p) - np.outer(p, p)
    vector = np.array([1.0, 2.0, 3.0])
    inputs = [
        vector,
        vector.reshape(1, -1),
        np.stack([vector, 2 * vector, -vector, vector]),
    ]
    for vec, result in zip(inputs, run([loss.multiply_fisher(v) for v in inputs])):
        assert result.shape == vec.shape
        np.testing.assert_allclose(result, vec @ fisher)


def test_categorical_fisher_batch_of_logits(graph):
    logits = np.array([[1.0, 2.0, 3.0], [4.0, 6.0, 8.0]])
    vector = np.array([[1.0, 2.0, 3.0], [5.0, 3.0, 1.0]])
    loss = lf.CategoricalLogitsNegativeLogProbLoss(logits)
    result = run(loss.multiply_fisher(vector))
    for row in range(2):
        p = np.exp(log_softmax(logits[row]))
        np.testing.assert_allclose(
            result[row], (np.diag(p) - np.outer(p, p)) @ vector[row]
        )


def test_float32_params_accept_float64_numpy_vectors(graph):
    loss = lf.MultiBernoulliNegativeLogProbLoss(tf.constant([[0.0, 1.0]], tf.float32))
    result = loss.multiply_fisher(np.array([[1.0, 2.0]]))
    assert result.dtype == tf.float32
    p = sigmoid(np.array([0.0, 1.0]))
    np.testing.assert_allclose(run(result)[0], p * (1 - p) * [1.0, 2.0], rtol=1e-6)


def test_fisher_is_finite_for_extreme_logits(graph):
    logits = np.array([[60.0, -60.0, 0.0]])
    bernoulli = lf.MultiBernoulliNegativeLogProbLoss(logits)
    categorical = lf.CategoricalLogitsNegativeLogProbLoss(logits)
    values = run(
        [
            bernoulli.multiply_fisher_factor(np.ones((1, 3))),
            categorical.multiply_fisher_factor(np.ones((1, 3))),
            bernoulli.evaluate_on_sample(1),
            categorical.evaluate_on_sample(1),
        ]
    )
    for value in values:
        assert np.all(np.isfinite(value))
    np.testing.assert_allclose(
        values[0], [[math.exp(-30), math.exp(-30), 0.5]], rtol=1e-6
    )


def test_bernoulli_fisher_factor_matches_float64_over_the_logit_range(graph):
    # √(p(1−p)) from one exp of −|l|/2: no overflow or cancellation, from
    # logits where p(1−p) itself underflows float32 (±150) to zero logits.
    logits = np.array([[-150.0, -40.0, -3.0, -1e-3, 0.0, 2e-4, 0.7, 17.0, 150.0]])
    bernoulli = lf.MultiBernoulliNegativeLogProbLoss(tf.constant(logits, tf.float32))
    factor = run(bernoulli.multiply_fisher_factor(np.ones_like(logits)))
    p, one_minus_p = sigmoid(logits), sigmoid(-logits)
    np.testing.assert_allclose(factor, np.sqrt(p * one_minus_p), rtol=1e-6)


# ---------------------------------------------------------------------------
# Shapes and insert_slice_in_zeros.


def test_inner_shapes(graph):
    logits = tf.placeholder(tf.float32, [None, 3])
    mean, variance = (
        tf.placeholder(tf.float32, [None, 2]),
        tf.placeholder(tf.float32, [None, 2]),
    )
    categorical = lf.CategoricalLogitsNegativeLogProbLoss(logits)
    bernoulli = lf.MultiBernoulliNegativeLogProbLoss(logits)
    normal = lf.NormalMeanNegativeLogProbLoss(mean)
    normal_mv = lf.NormalMeanVarianceNegativeLogProbLoss(mean, variance)
    for loss in (categorical, bernoulli):
        assert loss.fisher_factor_inner_static_shape.as_list() == [None, 3]
    assert normal.fisher_factor_inner_static_shape.as_list() == [None, 2]
    assert normal_mv.fisher_factor_inner_static_shape.as_list() == [None, 4]
    feed = {logits: np.zeros((5, 3)), mean: np.zeros((5, 2)), variance: np.ones((5, 2))}
    shapes = run(
        [
            categorical.fisher_factor_inner_shape,
            categorical.hessian_factor_inner_shape,
            bernoulli.fisher_factor_inner_shape,
            normal.fisher_factor_inner_shape,
            normal_mv.fisher_factor_inner_shape,
        ],
        feed,
    )
    expected = [[5, 3], [5, 3], [5, 3], [5, 2], [5, 4]]
    for shape, want in zip(shapes, expected):
        np.testing.assert_array_equal(shape, want)


def test_insert_slice_in_zeros_example(graph):
    result = lf.insert_slice_in_zeros(tf.constant([[[1, 2]], [[3, 4]]]), 1, 2, 0)
    np.testing.assert_array_equal(run(result), [[[1, 2], [0, 0]], [[3, 4], [0, 0]]])
    result = lf.insert_slice_in_zeros(np.array([[5.0], [6.0]]), 1, 3, 2)
    np.testing.assert_array_equal(run(result), [[0, 0, 5], [0, 0, 6]])


def test_insert_slice_in_zeros_errors(graph):
    with pytest.raises(ValueError, match=r"shape\[1\] to be 1"):
        lf.insert_slice_in_zeros(tf.zeros([2, 2]), 1, 3, 0)
    with pytest.raises(ValueError, match="position"):
        lf.insert_slice_in_zeros(tf.zeros([2, 1]), 1, 3, 3)


def test_abstract_classes_cannot_be_instantiated():
    for cls in (
        lf.LossFunction,
        lf.NegativeLogProbLoss,
        lf.NaturalParamsNegativeLogProbLoss,
        lf.DistributionNegativeLogProbLoss,
    ):
        with pytest.raises(TypeError):
            cls()


@pytest.mark.parametrize(
    "loss_class, bases",
    [
        (
            lf.NormalMeanNegativeLogProbLoss,
            ("DistributionNegativeLogProbLoss", "NaturalParamsNegativeLogProbLoss"),
        ),
        (
            lf.NormalMeanVarianceNegativeLogProbLoss,
            ("DistributionNegativeLogProbLoss",),
        ),
        (
            lf.CategoricalLogitsNegativeLogProbLoss,
            ("DistributionNegativeLogProbLoss", "NaturalParamsNegativeLogProbLoss"),
        ),
        (
            lf.OnehotCategoricalLogitsNegativeLogProbLoss,
            ("CategoricalLogitsNegativeLogProbLoss",),
        ),
        (
            lf.MultiBernoulliNegativeLogProbLoss,
            ("DistributionNegativeLogProbLoss", "NaturalParamsNegativeLogProbLoss"),
        ),
    ],
)
def test_concrete_losses_have_the_documented_public_bases(loss_class, bases):
    # API.md §3: the public base classes, in this order (a private helper
    # such as the logits mixin may come first).
    public_bases = [
        base.__name__
        for base in loss_class.__bases__
        if not base.__name__.startswith("_")
    ]
    assert public_bases == list(bases)
    assert issubclass(loss_class, lf.NegativeLogProbLoss)
