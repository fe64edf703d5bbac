"""Tests of fisher_factors' naming (variable-scope strings) and statistics helpers
(second moments, initializers, placement), against numpy references (API.md §4)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from damping_helpers import DampingFunc

from kfac.ops import fisher_factors as ff
from kfac.ops import utils
from kfac.ops._factors import second_moments

# -------------------------------------------------------------------- naming


def test_scope_string_from_params_example(graph):
    x, y = tf.constant(1.0), tf.constant(2.0)
    assert (
        ff.scope_string_from_params([[1, 2, 3], "foo", True, 4, (x, y)])
        == "1-2-3_foo_True_4_Const__Const_1"
    )


def test_scope_string_from_params_single_values_and_conversions(graph):
    x = tf.constant(1.0, name="x")
    assert ff.scope_string_from_params(x) == "x"
    assert ff.scope_string_from_params(None) == "None"
    assert ff.scope_string_from_params([np.int64(3), (np.int32(1), 2)]) == "3_1-2"
    assert ff.scope_string_from_params([tf.Dimension(4)]) == "4"
    partitioned = utils.PartitionedTensor(
        [tf.ones([1, 2], name="a"), tf.ones([2, 2], name="b")]
    )
    assert ff.scope_string_from_params([partitioned]) == "a__b"


@pytest.mark.parametrize("bad", [0.5, np.float32(0.5), object()])
def test_scope_string_from_params_rejects_unsupported(bad):
    with pytest.raises(ValueError, match="unsupported parameter type"):
        ff.scope_string_from_params([bad])


def test_scope_string_from_name(graph):
    with tf.name_scope("gradients/MatMul_grad"):
        tensor = tf.constant(1.0, name="MatMul_1")
    assert tensor.name == "gradients/MatMul_grad/MatMul_1:0"
    assert ff.scope_string_from_name(tensor) == "gradients_MatMul_grad_MatMul_1"
    other = tf.constant(2.0, name="b")
    assert ff.scope_string_from_name([tensor, (other,)]) == (
        "gradients_MatMul_grad_MatMul_1__b"
    )


def test_scalar_list_and_func_strings(graph):
    damping = tf.constant(0.1, name="damp")
    assert ff.scalar_or_tensor_to_string(-1) == "-1"
    assert ff.scalar_or_tensor_to_string(np.int64(5)) == "5"
    assert ff.scalar_or_tensor_to_string(np.float64(0.5)) == "0.5"
    assert ff.scalar_or_tensor_to_string(damping) == "damp"
    assert ff.list_to_string(["power", 0.5, damping, 2]) == "power_0.5_damp_2"
    func = DampingFunc(0.1, func_id=("normalize_damping", 0.1, np.int64(4)))
    assert ff.graph_func_to_id(func) == ("normalize_damping", 0.1, 4)
    assert ff.graph_func_to_string(func) == "normalize_damping_0.1_4"


# ------------------------------------------------------------------- helpers


def test_compute_cov_symmetric_and_cross(graph, rng):
    x, y = rng.randn(5, 3), rng.randn(5, 2)
    with tf.Session() as sess:
        cov, cross, normalised = sess.run(
            [
                ff.compute_cov(tf.constant(x)),
                ff.compute_cov(tf.constant(x), tensor_right=tf.constant(y)),
                ff.compute_cov(tf.constant(x), normalizer=2),
            ]
        )
    np.testing.assert_allclose(cov, sum(np.outer(r, r) for r in x) / 5)
    np.testing.assert_allclose(cross, sum(np.outer(a, b) for a, b in zip(x, y)) / 5)
    np.testing.assert_allclose(normalised, x.T @ x / 2)


@pytest.mark.parametrize("block_size", [320, 3, 2, 1])
@pytest.mark.parametrize("append_ones", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_symmetric_second_moment_blocks(
    graph, rng, monkeypatch, block_size, append_ones, dtype
):
    # Small blocks force the blocked path (1, 2, 3 and 4 column groups of 7).
    monkeypatch.setattr(second_moments, "BLOCK_SIZE", block_size)
    x = rng.randn(6, 7).astype(dtype)
    rows = tf.placeholder(dtype, [None, 7])
    with tf.Session() as sess:
        moment, normalised = sess.run(
            [
                second_moments.symmetric_second_moment(rows, append_ones=append_ones),
                second_moments.symmetric_second_moment(
                    rows, normalizer=tf.constant(4), append_ones=append_ones
                ),
            ],
            {rows: x},
        )
    padded = np.concatenate([x, np.ones((6, 1))], 1) if append_ones else x
    expected = sum(np.outer(row, row) for row in padded.astype(np.float64))
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    assert moment.dtype == dtype
    np.testing.assert_allclose(moment, expected / 6, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(normalised, expected / 4, rtol=tolerance, atol=tolerance)
    # Exactly symmetric, whatever the blocks.
    np.testing.assert_array_equal(moment, moment.T)
    np.testing.assert_array_equal(normalised, normalised.T)


@pytest.mark.parametrize("block_size", [320, 2, 1])
def test_symmetric_outer_product(graph, rng, monkeypatch, block_size):
    monkeypatch.setattr(second_moments, "BLOCK_SIZE", block_size)
    matrix = rng.randn(5, 3)
    with tf.Session() as sess:
        product = sess.run(second_moments.symmetric_outer_product(tf.constant(matrix)))
    expected = np.array([[row_i @ row_j for row_j in matrix] for row_i in matrix])
    np.testing.assert_allclose(product, expected, rtol=1e-12)
    if block_size < 5:  # blocked: exactly symmetric
        np.testing.assert_array_equal(product, product.T)


def test_num_column_blocks():
    assert second_moments.num_column_blocks(None) == 1
    assert second_moments.num_column_blocks(250) == 1
    assert second_moments.num_column_blocks(785) == 2
    assert second_moments.num_column_blocks(1001) == 3
    assert second_moments.num_column_blocks(10**5) == second_moments.MAX_BLOCKS


def test_symmetric_second_moment_unknown_width(graph, rng):
    x = rng.randn(5, 3)
    rows = tf.placeholder(tf.float64, [None, None])
    with tf.Session() as sess:
        moment = sess.run(
            second_moments.symmetric_second_moment(rows, append_ones=True), {rows: x}
        )
    padded = np.concatenate([x, np.ones((5, 1))], 1)
    np.testing.assert_allclose(moment, padded.T @ padded / 5)


def test_append_homog_with_unknown_batch(graph):
    tensor = tf.placeholder(tf.float32, [None, 2, 2])
    value = np.arange(12.0).reshape(3, 2, 2)
    with tf.Session() as sess:
        result = sess.run(ff.append_homog(tensor), {tensor: value})
    np.testing.assert_array_equal(result[..., :2], value)
    np.testing.assert_array_equal(result[..., 2], np.ones((3, 2)))


def test_initializers(graph):
    with tf.Session() as sess:
        inverse, cov, diag = sess.run(
            [
                ff.inverse_initializer([3, 3], tf.float32),
                ff.covariance_initializer([2, 2], tf.float64),
                ff.diagonal_covariance_initializer([2, 3], tf.float32, None),
            ]
        )
        ff.set_global_constants(init_covariances_at_zero=True)
        zero_cov, zero_diag = sess.run(
            [
                ff.covariance_initializer([2, 2], tf.float32),
                ff.diagonal_covariance_initializer([4], tf.float32, None),
            ]
        )
    np.testing.assert_array_equal(inverse, np.eye(3))
    np.testing.assert_array_equal(cov, np.eye(2))
    assert cov.dtype == np.float64
    np.testing.assert_array_equal(diag, np.ones((2, 3)))
    np.testing.assert_array_equal(zero_cov, np.zeros((2, 2)))
    np.testing.assert_array_equal(zero_diag, np.zeros(4))


def test_place_on_device(graph):
    with ff.place_on_device("/cpu:0"):
        placed = tf.constant(1.0)
    with ff.place_on_device(""):
        unplaced = tf.constant(1.0)
    with ff.place_on_device(None):
        unplaced_too = tf.constant(1.0)
    assert "CPU:0" in placed.device.upper()
    assert unplaced.device == "" and unplaced_too.device == ""
