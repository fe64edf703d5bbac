"""Tests of kfac.ops.utils (API.md §2): constants, containers, reshaping, SubGraph,
forward gradients, batch_execute. Positive-definite helpers:
test_utils_linalg.py; sparse products and PartitionedTensor:
test_utils_partitioned.py; patch extraction: test_conv_patches.py."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from session_helpers import run

from kfac.ops import utils

# ---------------------------------------------------------------------------
# Constants and configuration


def test_constants_defaults():
    assert utils.POSDEF_INV_METHOD == "cholesky"
    assert utils.POSDEF_EIG_METHOD == "self_adjoint"
    assert utils.posdef_inv_functions == {
        "matrix_inverse": utils.posdef_inv_matrix_inverse,
        "cholesky": utils.posdef_inv_cholesky,
        "eig": utils.posdef_inv_eig,
    }
    assert utils.posdef_eig_functions == {
        "self_adjoint": utils.posdef_eig_self_adjoint,
        "svd": utils.posdef_eig_svd,
    }


def test_set_global_constants(restore_constants):
    utils.set_global_constants(posdef_inv_method="eig")
    assert utils.POSDEF_INV_METHOD == "eig"
    utils.set_global_constants()
    assert utils.POSDEF_INV_METHOD == "eig"
    with pytest.raises(ValueError, match="posdef_inv_method"):
        utils.set_global_constants(posdef_inv_method="lu")
    assert utils.POSDEF_INV_METHOD == "eig"


# ---------------------------------------------------------------------------
# SequenceDict, ensure_sequence


def test_sequence_dict():
    seq_dict = utils.SequenceDict([("a", 1), ("b", 2)])
    assert seq_dict._dict == {"a": 1, "b": 2}
    assert seq_dict["a"] == 1
    assert seq_dict[("a", "b")] == [1, 2]
    assert seq_dict[["b", "a"]] == [2, 1]
    seq_dict[("c", "d")] = (3, 4)
    seq_dict["e"] = 5
    assert sorted(seq_dict.items()) == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
        ("d", 4),
        ("e", 5),
    ]
    assert isinstance(seq_dict.items(), list)
    assert utils.SequenceDict()._dict == {}
    with pytest.raises(KeyError):
        seq_dict["missing"]
    with pytest.raises(ValueError, match="2 keys"):
        seq_dict[("x", "y")] = (1,)


def test_sequence_dict_variables_as_keys(graph):
    var_1 = tf.get_variable("v1", [2])
    var_2 = tf.get_variable("v2", [2])
    seq_dict = utils.SequenceDict()
    seq_dict[(var_1, var_2)] = ["g1", "g2"]
    assert seq_dict[var_2] == "g2"
    assert seq_dict[(var_2, var_1)] == ["g2", "g1"]


def test_ensure_sequence():
    assert utils.ensure_sequence((1, 2)) == (1, 2)
    as_list = [1]
    assert utils.ensure_sequence(as_list) is as_list
    assert utils.ensure_sequence(3) == (3,)


def test_is_data_format_channel_last():
    assert utils.is_data_format_channel_last(None)
    assert utils.is_data_format_channel_last("NHWC")
    assert utils.is_data_format_channel_last("NWC")
    assert not utils.is_data_format_channel_last("NCHW")


def test_tpu_helpers(graph):
    assert utils.on_tpu() is False
    tensor = tf.constant([1.0, 2.0])
    assert utils.cross_replica_mean(tensor) is tensor


# ---------------------------------------------------------------------------
# Reshaping


def test_tensors_to_column_and_back(graph, rng):
    arrays = [rng.randn(2, 3), rng.randn(4), rng.randn(1, 2, 2)]
    tensors = [tf.constant(a) for a in arrays]
    column = utils.tensors_to_column(tensors)
    single_column = utils.tensors_to_column(tensors[0])
    restored = utils.column_to_tensors(tensors, column)
    restored_single = utils.column_to_tensors(tensors[0], single_column)
    assert isinstance(restored, tuple) and len(restored) == 3
    assert column.shape.as_list() == [14, 1]
    values = run([column, single_column, list(restored), restored_single])
    expected = np.concatenate([a.reshape(-1) for a in arrays])[:, None]
    np.testing.assert_array_equal(values[0], expected)
    np.testing.assert_array_equal(values[1], arrays[0].reshape(-1, 1))
    for got, want in zip(values[2], arrays):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(values[3], arrays[0])


def test_kronecker_product(graph, rng):
    mat1, mat2 = rng.randn(2, 3), rng.randn(4, 2)
    product = utils.kronecker_product(tf.constant(mat1), tf.constant(mat2))
    assert product.shape.as_list() == [8, 6]
    np.testing.assert_allclose(run(product), np.kron(mat1, mat2), rtol=1e-14)
    with pytest.raises(ValueError, match="mat2"):
        utils.kronecker_product(tf.constant(mat1), tf.constant([1.0, 2.0], tf.float64))


def test_layer_params_to_mat2d(graph, rng):
    weights, bias = rng.randn(2, 3, 4), rng.randn(4)
    with_bias = utils.layer_params_to_mat2d((tf.constant(weights), tf.constant(bias)))
    as_list = utils.layer_params_to_mat2d([tf.constant(weights), tf.constant(bias)])
    no_bias = utils.layer_params_to_mat2d(tf.constant(weights))
    expected_no_bias = weights.reshape(6, 4)
    expected_with_bias = np.concatenate([expected_no_bias, bias[None, :]], axis=0)
    values = run([with_bias, as_list, no_bias])
    np.testing.assert_array_equal(values[0], expected_with_bias)
    np.testing.assert_array_equal(values[1], expected_with_bias)
    np.testing.assert_array_equal(values[2], expected_no_bias)
    sparse = tf.IndexedSlices(tf.constant(rng.randn(2, 4)), tf.constant([0, 3]))
    assert utils.layer_params_to_mat2d(sparse) is sparse
    with pytest.raises(ValueError, match="weights, bias"):
        utils.layer_params_to_mat2d((tf.constant(weights),))


def test_mat2d_to_layer_params_round_trip(graph, rng):
    weights, bias = rng.randn(2, 3, 4), rng.randn(1, 4)
    template = (tf.constant(weights), tf.constant(bias))
    mat2d = utils.layer_params_to_mat2d(template)
    w_back, b_back = utils.mat2d_to_layer_params(template, mat2d)
    # Port fix (§12): the bias takes the template's [1, 4] shape, not [4].
    assert w_back.shape.as_list() == [2, 3, 4]
    assert b_back.shape.as_list() == [1, 4]
    plain = utils.mat2d_to_layer_params(
        tf.constant(weights), utils.layer_params_to_mat2d(tf.constant(weights))
    )
    values = run([w_back, b_back, plain])
    np.testing.assert_array_equal(values[0], weights)
    np.testing.assert_array_equal(values[1], bias)
    np.testing.assert_array_equal(values[2], weights)


def test_mat2d_to_layer_params_indexed_slices(graph, rng):
    template = tf.IndexedSlices(tf.constant(rng.randn(2, 4)), tf.constant([0, 3]))
    mat2d = tf.IndexedSlices(tf.constant(rng.randn(2, 4)), tf.constant([1, 2]))
    assert utils.mat2d_to_layer_params(template, mat2d) is mat2d
    with pytest.raises(TypeError, match="IndexedSlices"):
        utils.mat2d_to_layer_params(template, tf.zeros([2, 4]))


# ---------------------------------------------------------------------------
# SubGraph


def test_subgraph_membership(graph):
    a = tf.placeholder(tf.float32, [2], name="a")
    b = tf.multiply(a, 2.0, name="b")
    c = tf.add(b, 1.0, name="c")
    d = tf.negative(a, name="d")
    subgraph = utils.SubGraph([c])
    for node in (a, a.op, b, b.op, c, c.op):
        assert subgraph.is_member(node)
    assert not subgraph.is_member(d)
    assert not subgraph.is_member(d.op)
    assert subgraph.filter_list([d, c, a, d.op, b.op]) == [c, a, b.op]


def test_subgraph_deep_chain_is_iterative(graph):
    tensor = tf.constant(1.0)
    first = tensor
    for _ in range(1500):  # a recursive walk would need ~3000 frames
        tensor = tf.identity(tensor)
    assert utils.SubGraph([tensor]).is_member(first)


def test_subgraph_variable_uses(tf_behavior, rng):
    with tf.Graph().as_default():
        weights = tf.get_variable("w", [3, 2])
        other = tf.get_variable("other", [3, 2])
        inputs = tf.constant(rng.randn(4, 3), tf.float32)
        used_twice = tf.matmul(inputs, weights) + tf.matmul(2 * inputs, weights)
        outside = tf.matmul(inputs, weights)
        subgraph = utils.SubGraph([used_twice])
        assert subgraph.variable_uses(weights) == 2
        assert subgraph.variable_uses(other) == 0
        assert utils.SubGraph([used_twice, outside]).variable_uses(weights) == 3
        with pytest.raises(ValueError, match="tf.Variable"):
            subgraph.variable_uses(inputs)


# ---------------------------------------------------------------------------
# fwd_gradients, random signs, batch_execute


def test_fwd_gradients_matches_explicit_jacobian(graph, rng):
    w_value, x_value, z_value = rng.randn(3, 4), rng.randn(4), rng.randn(2)
    tangent_x, tangent_z = rng.randn(4), rng.randn(2)
    w = tf.constant(w_value)
    x = tf.constant(x_value)
    z = tf.constant(z_value)
    unrelated = tf.constant(rng.randn(5))
    ys = [tf.tanh(tf.linalg.matvec(w, x)), tf.reduce_sum(x**2) * z, unrelated * 2.0]
    products = utils.fwd_gradients(
        ys, [x, z], grad_xs=[tf.constant(tangent_x), tf.constant(tangent_z)]
    )
    assert len(products) == 3
    products = run(products)
    pre = w_value @ x_value
    jacobian_y0 = (1 - np.tanh(pre) ** 2)[:, None] * w_value
    jacobian_y1_x = 2 * np.outer(z_value, x_value)
    jacobian_y1_z = np.sum(x_value**2) * np.eye(2)
    np.testing.assert_allclose(products[0], jacobian_y0 @ tangent_x, rtol=1e-12)
    np.testing.assert_allclose(
        products[1], jacobian_y1_x @ tangent_x + jacobian_y1_z @ tangent_z, rtol=1e-12
    )
    np.testing.assert_array_equal(products[2], np.zeros(5))  # port: zeros, not None


def test_fwd_gradients_indexed_slices_and_stop_gradients(graph, rng):
    params_value, tangent = rng.randn(5, 2), rng.randn(5, 2)
    params = tf.constant(params_value)
    gathered = tf.gather(params, [3, 0, 3])  # backprop gives IndexedSlices
    (product,) = utils.fwd_gradients([gathered], [params], [tf.constant(tangent)])
    a = tf.constant(1.5, tf.float64)
    b = 2.0 * a
    y = a * b
    (stopped,) = utils.fwd_gradients(
        [y], [a], [tf.constant(1.0, tf.float64)], stop_gradients=[b]
    )
    (full,) = utils.fwd_gradients([y], [a], [tf.constant(1.0, tf.float64)])
    product, stopped, full = run([product, stopped, full])
    np.testing.assert_allclose(product, tangent[[3, 0, 3]])
    assert stopped == pytest.approx(3.0)  # b treated as a constant: dy = b
    assert full == pytest.approx(6.0)  # y = 2a²: dy = 4a


def test_generate_random_signs(graph):
    tf.set_random_seed(1)
    signs = utils.generate_random_signs([2000], dtype=tf.float64)
    assert signs.dtype == tf.float64
    value = run(signs)
    assert set(np.unique(value)) == {-1.0, 1.0}
    assert abs(value.mean()) < 0.1


@pytest.mark.parametrize("num_thunks, batch_size", [(3, 2), (4, 3), (3, 1)])
def test_batch_execute_schedule(num_thunks, batch_size, tf_behavior):
    with tf.Graph().as_default():
        global_step = tf.train.get_or_create_global_step()
        counters = [tf.Variable(0, name="counter_%d" % j) for j in range(num_thunks)]
        thunks = [lambda c=c: tf.assign_add(c, 1) for c in counters]
        results = utils.batch_execute(global_step, thunks, batch_size)
        assert len(results) == num_thunks
        increment_step = tf.assign_add(global_step, 1)
        ran = []
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(6):
                before = sess.run(counters)
                sess.run(results)
                after = sess.run(counters)
                ran.append({j for j in range(num_thunks) if after[j] - before[j] == 1})
                assert all(after[j] - before[j] in (0, 1) for j in range(num_thunks))
                sess.run(increment_step)
    expected = [
        {
            j
            for j in range(num_thunks)
            if (batch_size - 1 + step * batch_size - j) % num_thunks < batch_size
        }
        for step in range(6)
    ]
    assert ran == expected
    assert all(len(chosen) == batch_size for chosen in ran)
    if (num_thunks, batch_size) == (3, 2):  # API.md anchor
        assert ran[:4] == [{0, 1}, {0, 2}, {1, 2}, {0, 1}]


def test_batch_execute_rejects_bad_batch_size(graph):
    with pytest.raises(ValueError, match="batch_size"):
        utils.batch_execute(tf.constant(0), [tf.no_op], 0)
