"""Tests of kfac.ops.utils' sparse products and PartitionedTensor (API.md §2),
against numpy."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from session_helpers import run

from kfac.ops import utils

# ---------------------------------------------------------------------------
# Sparse products


def dense_from_slices(values, indices, num_rows):
    dense = np.zeros((num_rows, values.shape[1]))
    for row, index in zip(values, indices):
        dense[index] += row
    return dense


def test_matmul_sparse_dense(graph, rng):
    values, indices, dense = rng.randn(2, 3), np.array([0, 3]), rng.randn(3, 4)
    sparse = tf.IndexedSlices(
        tf.constant(values),
        tf.constant(indices),
        dense_shape=tf.constant([5, 3], tf.int64),
    )
    product = utils.matmul_sparse_dense(sparse, tf.constant(dense))
    assert isinstance(product, tf.IndexedSlices)
    product_values, product_indices, dense_shape = run(
        [product.values, product.indices, product.dense_shape]
    )
    np.testing.assert_array_equal(product_indices, indices)
    np.testing.assert_array_equal(dense_shape, [5, 4])
    np.testing.assert_allclose(
        dense_from_slices(product_values, product_indices, 5),
        dense_from_slices(values, indices, 5) @ dense,
    )


def test_matmul_sparse_dense_errors(graph):
    matrix = tf.IndexedSlices(tf.zeros([2, 3]), tf.constant([0, 1]))
    with pytest.raises(ValueError, match="IndexedSlices"):
        utils.matmul_sparse_dense(tf.zeros([2, 3]), tf.zeros([3, 4]))
    with pytest.raises(ValueError, match="represent a matrix"):
        utils.matmul_sparse_dense(
            tf.IndexedSlices(tf.zeros([2, 3, 1]), tf.constant([0, 1])), tf.zeros([3, 4])
        )
    with pytest.raises(ValueError, match="B must be a rank-2"):
        utils.matmul_sparse_dense(matrix, tf.zeros([3]))


def test_matmul_diag_sparse(graph, rng):
    diagonal, values, indices = rng.randn(5), rng.randn(3, 2), np.array([4, 1, 4])
    sparse = tf.IndexedSlices(
        tf.constant(values), tf.constant(indices), tf.constant([5, 2])
    )
    product = utils.matmul_diag_sparse(tf.constant(diagonal), sparse)
    assert product.dense_shape is sparse.dense_shape
    product_values, product_indices = run([product.values, product.indices])
    np.testing.assert_array_equal(product_indices, indices)
    np.testing.assert_allclose(
        dense_from_slices(product_values, product_indices, 5),
        np.diag(diagonal) @ dense_from_slices(values, indices, 5),
    )
    with pytest.raises(ValueError, match="A_diag must be a rank-1"):
        utils.matmul_diag_sparse(tf.zeros([5, 5]), sparse)
    with pytest.raises(ValueError, match="B must be an IndexedSlices"):
        utils.matmul_diag_sparse(tf.zeros([5]), tf.zeros([5, 2]))


# ---------------------------------------------------------------------------
# PartitionedTensor


def test_partitioned_tensor_shape_dtype_and_values(graph, rng):
    parts = [rng.randn(2, 3), rng.randn(4, 3)]
    tensors = [tf.constant(p) for p in parts]
    partitioned = utils.PartitionedTensor(tensors)
    assert partitioned.tensors == tensors
    assert partitioned.shape.as_list() == [6, 3]
    assert partitioned.get_shape().as_list() == [6, 3]
    assert partitioned.dtype == tf.float64
    concat = partitioned.as_tensor()
    assert partitioned.as_tensor() is concat  # cached on the same device
    summed = tf.reduce_sum(partitioned, axis=0)  # tensor conversion
    converted = tf.convert_to_tensor(partitioned)
    sliced = partitioned[1:3]
    values = run([concat, summed, converted, sliced])
    expected = np.concatenate(parts)
    np.testing.assert_array_equal(values[0], expected)
    np.testing.assert_allclose(values[1], expected.sum(axis=0))
    np.testing.assert_array_equal(values[2], expected)
    np.testing.assert_array_equal(values[3], expected[1:3])
    assert "PartitionedTensor([Const:0" in str(partitioned)
    assert "float64" in str(partitioned) and "(6, 3)" in str(partitioned)


def test_partitioned_tensor_unknown_batch(graph):
    partitioned = utils.PartitionedTensor(
        [tf.placeholder(tf.float32, [None, 3]), tf.zeros([2, 3])]
    )
    assert partitioned.shape.as_list() == [None, 3]


def test_partitioned_tensor_devices(graph):
    with tf.device("/cpu:0"):
        first, second = tf.zeros([1, 2]), tf.ones([1, 2])
    with tf.device("/cpu:1"):
        third = tf.ones([1, 2])
    same = utils.PartitionedTensor([first, second])
    mixed = utils.PartitionedTensor([first, third])
    assert same.device == first.device
    assert mixed.device is None
    with tf.device("/cpu:0"):
        on_cpu0 = same.as_tensor()
    with tf.device("/cpu:1"):
        on_cpu1 = same.as_tensor()
    assert on_cpu0 is not on_cpu1
    with tf.device("/cpu:0"):
        assert same.as_tensor() is on_cpu0


def test_partitioned_tensor_equality_and_hash(graph):
    a, b = tf.zeros([1, 2]), tf.ones([1, 2])
    first = utils.PartitionedTensor([a, b])
    second = utils.PartitionedTensor([a, b])
    reversed_order = utils.PartitionedTensor([b, a])
    assert first == second and not first != second
    assert hash(first) == hash(second)
    assert first != reversed_order and not first == reversed_order
    assert first != utils.PartitionedTensor([a, tf.ones([1, 2])])
    assert first != [a, b]
    cache = {first: "factor"}
    assert cache[second] == "factor"
    assert reversed_order not in cache


def test_partitioned_tensor_in_cond_branch(tf_behavior):
    """The concat cached inside a cond branch is not reused outside it."""
    with tf.Graph().as_default():
        partitioned = utils.PartitionedTensor([tf.ones([1, 2]), tf.ones([2, 2])])
        inside = tf.cond(
            tf.constant(True),
            lambda: tf.reduce_sum(partitioned.as_tensor()),
            lambda: tf.constant(0.0),
        )
        outside = tf.reduce_sum(partitioned.as_tensor())
        assert run([inside, outside]) == [6.0, 6.0]


@pytest.mark.parametrize(
    "make_tensors, fragment",
    [
        (lambda: [], "non-empty"),
        (lambda: [tf.zeros([1, 2]), tf.zeros([1, 2], tf.float64)], "dtype"),
        (lambda: [tf.zeros([1, 2]), tf.zeros([1, 3])], "shape beyond dimension 0"),
        (lambda: [tf.zeros([])], "rank >= 1"),
    ],
)
def test_partitioned_tensor_errors(make_tensors, fragment, graph):
    with pytest.raises(ValueError, match=fragment):
        utils.PartitionedTensor(make_tensors())


def test_partitioned_tensor_conversion_errors(graph):
    partitioned = utils.PartitionedTensor([tf.zeros([1, 2])])
    with pytest.raises(ValueError, match="requested dtype float64"):
        partitioned.as_tensor(dtype=tf.float64)
    with pytest.raises(ValueError, match="reference"):
        partitioned.as_tensor(as_ref=True)
