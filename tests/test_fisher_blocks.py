"""Tests of fisher_blocks: damping helpers, generic and fully connected blocks.

Every product is compared with the dense block matrix built in numpy from the
data (test_fisher_blocks_support), applied to the row-major `vec` of the mat2d
form.
"""

from unittest import mock

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from test_fisher_blocks_support import FakeLayerCollection
from test_fisher_blocks_support import apply_dense
from test_fisher_blocks_support import build_block_updates
from test_fisher_blocks_support import kron_damped
from test_fisher_blocks_support import make_factor_updates
from test_fisher_blocks_support import run_updates
from test_fisher_blocks_support import second_moment
from test_fisher_blocks_support import solve_dense
from test_fisher_blocks_support import with_ones

from kfac.ops import fisher_blocks as fb
from kfac.ops import fisher_factors as ff
from kfac.ops import utils
from kfac.ops._config import KfacConfig

# ----------------------------------------------------------------------------
# Damping helpers


def test_compute_pi_tracenorm_anchor(graph):
    left = tf.linalg.diag(tf.constant([1.0, 2.0, 0.0, 1.0]))
    right = tf.ones([2, 2])
    with tf.Session() as sess:
        assert sess.run(fb.compute_pi_tracenorm(left, right)) == pytest.approx(1.0)


def test_compute_pi_tracenorm_rank1_is_a_diagonal(graph, rng):
    left_diag = rng.rand(5) + 0.1
    right = rng.randn(3, 3)
    right = right @ right.T
    expected = np.sqrt((left_diag.sum() / 5) / (np.trace(right) / 3))
    with tf.Session() as sess:
        from_diag = sess.run(fb.compute_pi_tracenorm(left_diag, right))
        from_dense = sess.run(fb.compute_pi_tracenorm(np.diag(left_diag), right))
    np.testing.assert_allclose(from_diag, expected, rtol=1e-12)
    np.testing.assert_allclose(from_dense, expected, rtol=1e-12)


def test_compute_pi_tracenorm_rejects_rank3(graph):
    with pytest.raises(ValueError, match="rank 1"):
        fb.compute_pi_tracenorm(tf.ones([2, 2, 2]), tf.ones([2, 2]))


def test_compute_pi_adjusted_damping_splits_by_pi(graph, monkeypatch):
    left = np.diag([4.0, 4.0])  # tr/dim = 4
    right = np.diag([1.0, 1.0, 1.0])  # tr/dim = 1 → π = 2
    with tf.Session() as sess:
        np.testing.assert_allclose(
            sess.run(fb.compute_pi_adjusted_damping(left, right, 0.3)), [0.6, 0.15]
        )
        monkeypatch.setattr(fb, "PI_TYPE", fb.PI_OFF_NAME)
        assert fb.compute_pi_adjusted_damping(left, right, 0.3) == (0.3, 0.3)


def test_compute_pi_adjusted_damping_unknown_pi_type(graph, monkeypatch):
    monkeypatch.setattr(fb, "PI_TYPE", "bogus")
    with pytest.raises(ValueError, match="PI_TYPE"):
        fb.compute_pi_adjusted_damping(tf.eye(2), tf.eye(2), 0.1)


def _block_defaults():
    config = KfacConfig.from_defaults()
    return (config.normalize_damping_power, config.pi_type)


def test_constants_are_forwarded_to_config():
    assert fb.NORMALIZE_DAMPING_POWER == 1.0
    assert fb.PI_TYPE == fb.PI_TRACENORM_NAME == "tracenorm"
    assert fb.PI_OFF_NAME == "off"
    try:
        fb.set_global_constants(normalize_damping_power=0.5, pi_type="off")
        assert _block_defaults() == (0.5, "off")
        fb.PI_TYPE = "tracenorm"
        assert _block_defaults() == (0.5, "tracenorm")
    finally:
        fb.set_global_constants(normalize_damping_power=1.0, pi_type="tracenorm")
    with pytest.raises(ValueError, match="pi_type"):
        fb.set_global_constants(pi_type="trace")
    # mock.patch.object deletes, then restores the attribute.
    with mock.patch.object(fb, "PI_TYPE", "off"):
        assert _block_defaults()[1] == "off"
    assert _block_defaults()[1] == fb.PI_TYPE == "tracenorm"


def test_normalize_damping_uses_the_power(monkeypatch):
    assert fb.normalize_damping(0.8, 4) == pytest.approx(0.2)
    monkeypatch.setattr(fb, "NORMALIZE_DAMPING_POWER", 0.5)
    assert fb.normalize_damping(0.8, 4) == pytest.approx(0.4)
    monkeypatch.setattr(fb, "NORMALIZE_DAMPING_POWER", 0)
    assert fb.normalize_damping(0.8, 4) == 0.8


def test_packaged_func_ids():
    func = fb.PackagedFunc(lambda: 3.0, 0.5)
    assert func() == 3.0
    assert func.func_id == (0.5,)
    assert fb.PackagedFunc(lambda: 1, ["a", 2]).func_id == ("a", 2)
    assert fb._package_func(lambda: 1, ("a", 2)).func_id == ("a", 2)
    # numpy scalars become Python scalars (legal in variable names).
    func_id = fb.PackagedFunc(lambda: 1, (np.int64(4), np.float32(0.5))).func_id
    assert func_id == (4, 0.5) and type(func_id[0]) is int
    with pytest.raises(ValueError, match="callable"):
        fb.PackagedFunc(0.5, "id")


def test_packaged_func_lazy_id_is_read_each_time():
    state = {"name": "first"}
    func = fb.PackagedFunc(lambda: 0.0, ("prefix", lambda: state["name"]))
    assert func.func_id == ("prefix", "first")
    state["name"] = "second"
    assert func.func_id == ("prefix", "second")


# ----------------------------------------------------------------------------
# Generic blocks


def _generic_block_setup(block_cls, rng):
    params = (tf.zeros([2, 3], tf.float64), tf.zeros([3], tf.float64))
    grads = (rng.randn(2, 3), rng.randn(3))
    block = block_cls(FakeLayerCollection(), params)
    block.register_additional_tower(2)
    block.register_additional_tower(3)
    grads_list = ((tf.constant(grads[0]), tf.constant(grads[1])),)
    column = np.concatenate([grads[0].reshape(-1), grads[1]])
    return block, grads_list, column


def test_full_fb_matches_dense(graph, rng):
    block, grads_list, column = _generic_block_setup(fb.FullFB, rng)
    assert block.num_registered_towers == 2
    assert block.tensors_to_compute_grads() is block._params
    cov_ops, inv_ops = build_block_updates(block, grads_list, 0.3)
    vector = (rng.randn(2, 3), rng.randn(3))
    fisher = np.outer(column, column) / 5.0  # batch 2 + 3
    damped = fisher + 0.3 * np.eye(9)
    flat = np.concatenate([vector[0].reshape(-1), vector[1]])
    tf_vector = tuple(tf.constant(v) for v in vector)
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        product, inverse, full = sess.run(
            (
                block.multiply(tf_vector),
                block.multiply_inverse(tf_vector),
                block.full_fisher_block(),
            )
        )
    np.testing.assert_allclose(
        np.concatenate([product[0].ravel(), product[1]]), damped @ flat, rtol=1e-10
    )
    np.testing.assert_allclose(
        np.concatenate([inverse[0].ravel(), inverse[1]]),
        np.linalg.solve(damped, flat),
        rtol=1e-10,
    )
    assert inverse[0].shape == (2, 3) and inverse[1].shape == (3,)
    np.testing.assert_allclose(full, fisher, rtol=1e-10)


def test_full_fb_anchor_identity_cov(graph):
    params = (tf.zeros([2]), tf.zeros([1]))
    block = fb.FullFB(FakeLayerCollection(), params)
    block.register_additional_tower(4)
    grads_list = ((tf.ones([2]), tf.ones([1])),)
    block.instantiate_factors(grads_list, 0.5)
    block.register_inverse()
    block._factor.instantiate_cov_variables()  # identity
    block._factor.instantiate_inv_variables()
    inv_ops = block._factor.make_inverse_update_ops()
    vector = (tf.constant([1.0, 2.0]), tf.constant([3.0]))
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(inv_ops)
        result = sess.run(block.multiply_inverse(vector))
    np.testing.assert_allclose(result[0], [2 / 3, 4 / 3], rtol=1e-6)
    np.testing.assert_allclose(result[1], [2.0], rtol=1e-6)


def test_naive_diagonal_fb_matches_dense(graph, rng):
    block, grads_list, column = _generic_block_setup(fb.NaiveDiagonalFB, rng)
    cov_ops, inv_ops = build_block_updates(block, grads_list, 0.3, exps=(-1, 2))
    vector = (rng.randn(2, 3), rng.randn(3))
    diagonal = column**2 / 5.0 + 0.3
    flat = np.concatenate([vector[0].reshape(-1), vector[1]])
    tf_vector = tuple(tf.constant(v) for v in vector)
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        results = sess.run(
            [block.multiply_matpower(tf_vector, exp) for exp in (1, -1, 2)]
        )
        full = sess.run(block.full_fisher_block())
    for (weights, bias), exp in zip(results, (1, -1, 2)):
        np.testing.assert_allclose(
            np.concatenate([weights.ravel(), bias]), diagonal**exp * flat, rtol=1e-10
        )
    np.testing.assert_allclose(full, np.diag(column**2 / 5.0), rtol=1e-10)


def test_products_before_instantiation_fail(graph):
    block = fb.FullFB(FakeLayerCollection(), tf.zeros([2]))
    with pytest.raises(AttributeError):
        block.multiply_inverse(tf.ones([2]))
    kron_block = fb.FullyConnectedKFACBasicFB(FakeLayerCollection())
    with pytest.raises(AttributeError):
        kron_block.multiply(tf.ones([2, 2]))
    with pytest.raises(AttributeError):
        kron_block.full_fisher_block()


# ----------------------------------------------------------------------------
# Fully connected blocks


def _fc_data(rng, batch=5, num_in=3, num_out=2):
    return rng.randn(batch, num_in), rng.randn(batch, num_out)


def _fc_block(block_cls, inputs, grads, num_towers=1, **kwargs):
    """Registers the rows split into `num_towers` towers; returns block, grads_list."""
    block = block_cls(FakeLayerCollection(), **kwargs)
    input_towers = np.array_split(inputs, num_towers)
    grad_towers = [tf.constant(g) for g in np.array_split(grads, num_towers)]
    for tower_inputs, tower_grads in zip(input_towers, grad_towers):
        block.register_additional_tower(tf.constant(tower_inputs), tower_grads)
    return block, (tuple(grad_towers),)


def _fc_vector(rng, has_bias, num_in=3, num_out=2):
    weights = rng.randn(num_in, num_out)
    if not has_bias:
        return weights, weights
    bias = rng.randn(num_out)
    return (weights, bias), np.concatenate([weights, bias[None]], axis=0)


def _to_tf(vector):
    if isinstance(vector, tuple):
        return tuple(tf.constant(v) for v in vector)
    return tf.constant(vector)


def _to_mat2d(result):
    if isinstance(result, tuple):
        return np.concatenate([result[0], result[1][None]], axis=0)
    return result


@pytest.mark.parametrize("has_bias", [False, True])
def test_fully_connected_kfac_matches_dense(graph, rng, has_bias, tf_behavior):
    inputs, grads = _fc_data(rng)
    block, grads_list = _fc_block(
        fb.FullyConnectedKFACBasicFB, inputs, grads, has_bias=has_bias
    )
    cov_ops, inv_ops = build_block_updates(block, grads_list, 0.1)
    rows = with_ones(inputs) if has_bias else inputs
    input_cov, output_cov = second_moment(rows), second_moment(grads)
    damped = kron_damped(input_cov, output_cov, 0.1)
    vector, mat2d = _fc_vector(rng, has_bias)
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        product, inverse, full = sess.run(
            (
                block.multiply(_to_tf(vector)),
                block.multiply_inverse(_to_tf(vector)),
                block.full_fisher_block(),
            )
        )
    np.testing.assert_allclose(
        _to_mat2d(product), apply_dense(damped, mat2d), rtol=1e-10
    )
    np.testing.assert_allclose(
        _to_mat2d(inverse), solve_dense(damped, mat2d), rtol=1e-10
    )
    np.testing.assert_allclose(full, np.kron(input_cov, output_cov), rtol=1e-10)
    if has_bias:
        assert inverse[0].shape == (3, 2) and inverse[1].shape == (2,)


def test_fully_connected_kfac_anchor(graph):
    block = fb.FullyConnectedKFACBasicFB(FakeLayerCollection())
    block.register_additional_tower(tf.ones([3, 2]), tf.ones([3, 2]))
    block.instantiate_factors(((tf.ones([3, 2]),),), 0.5)
    block.register_inverse()
    factors = [block._input_factor, block._output_factor]
    for factor in factors:
        factor.instantiate_cov_variables()  # identity
        factor.instantiate_inv_variables()
    inv_ops = [op for factor in factors for op in factor.make_inverse_update_ops()]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(inv_ops)
        result = sess.run(block.multiply_inverse(tf.constant([[2.0, 3.0], [4.0, 5.0]])))
    np.testing.assert_allclose(
        result, [[0.686291, 1.029437], [1.372583, 1.715729]], rtol=1e-5
    )


def test_kronecker_damping_ids_and_factor_sharing(graph, rng):
    inputs, grads = _fc_data(rng)
    lc = FakeLayerCollection()
    shared_inputs = tf.constant(inputs)
    blocks = []
    for _ in range(2):
        block = fb.FullyConnectedKFACBasicFB(lc, has_bias=True)
        block.register_additional_tower(shared_inputs, tf.constant(grads))
        block.instantiate_factors(((tf.constant(grads),),), 0.25)
        blocks.append(block)
    # Same inputs → one A factor; different gradient tensors → two G factors.
    assert blocks[0]._input_factor is blocks[1]._input_factor
    assert blocks[0]._output_factor is not blocks[1]._output_factor
    block = blocks[0]
    expected = (
        "compute_pi_adjusted_damping",
        "cov",
        block._input_factor.name,
        "cov",
        block._output_factor.name,
        0.25,
        "power",
        0.5,
    )
    assert block._input_damping_func.func_id == expected + ("ref", 0)
    assert block._output_damping_func.func_id == expected + ("ref", 1)
    assert block._renorm_coeff == 1.0


def test_damping_variable_is_read_at_inverse_update(graph, rng, tf_behavior):
    inputs, grads = _fc_data(rng)
    block, grads_list = _fc_block(fb.FullyConnectedKFACBasicFB, inputs, grads)
    damping = tf.Variable(0.1, dtype=tf.float64, trainable=False)
    cov_ops, inv_ops = build_block_updates(block, grads_list, damping)
    input_cov, output_cov = second_moment(inputs), second_moment(grads)
    vector, _ = _fc_vector(rng, False)
    result = block.multiply_inverse(tf.constant(vector))
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        sess.run(damping.assign(2.0))
        sess.run(inv_ops)
        np.testing.assert_allclose(
            sess.run(result),
            solve_dense(kron_damped(input_cov, output_cov, 2.0), vector),
            rtol=1e-10,
        )


@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("strategy", ["concat", "separate"])
def test_fully_connected_diagonal_matches_dense(
    graph, rng, has_bias, strategy, monkeypatch
):
    monkeypatch.setattr(ff, "TOWER_STRATEGY", strategy)
    inputs, grads = _fc_data(rng, batch=6)
    rows = with_ones(inputs) if has_bias else inputs
    diagonal = np.mean(
        [np.outer(row, grad) ** 2 for row, grad in zip(rows, grads)], axis=0
    )
    vector, mat2d = _fc_vector(rng, has_bias)
    results = []
    for num_towers in (1, 2):  # splitting the batch into towers changes nothing
        towers = [
            (tf.constant(tower_inputs), tf.constant(tower_grads))
            for tower_inputs, tower_grads in zip(
                np.split(inputs, num_towers), np.split(grads, num_towers)
            )
        ]
        grads_list = (tuple(tower_grads for _, tower_grads in towers),)
        lc = FakeLayerCollection()
        blocks = [fb.FullyConnectedDiagonalFB(lc, has_bias=has_bias) for _ in range(2)]
        for block, damping in zip(blocks, (0.0, 0.2)):
            for tower_inputs, tower_grads in towers:
                block.register_additional_tower(tower_inputs, tower_grads)
            block.instantiate_factors(grads_list, damping)
        # Same tensors → one shared factor, seen with two dampings.
        assert blocks[0]._factor is blocks[1]._factor
        cov_ops, inv_ops = make_factor_updates(lc)
        with tf.Session() as sess:
            run_updates(sess, cov_ops, inv_ops)
            results.append(
                sess.run(
                    (
                        blocks[0].multiply(_to_tf(vector)),
                        blocks[1].multiply_inverse(_to_tf(vector)),
                        blocks[1].full_fisher_block(),
                    )
                )
            )
    for product, inverse, full in results:
        np.testing.assert_allclose(_to_mat2d(product), diagonal * mat2d, rtol=1e-10)
        np.testing.assert_allclose(
            _to_mat2d(inverse), mat2d / (diagonal + 0.2), rtol=1e-10
        )
        np.testing.assert_allclose(full, np.diag(diagonal.ravel()), rtol=1e-10)


# ----------------------------------------------------------------------------
# Towers


def test_process_data_tower_strategies(graph, monkeypatch):
    towers = [(tf.ones([2, 3]), tf.ones([2, 4])), (tf.ones([1, 3]), tf.ones([1, 4]))]

    def make_block():
        # The strategy is read when the block is made (its configuration).
        block = fb.FullyConnectedKFACBasicFB(FakeLayerCollection())
        for tower_inputs, tower_outputs in towers:
            block.register_additional_tower(tower_inputs, tower_outputs)
        return block

    block = make_block()
    assert block.num_registered_towers == 2
    outputs = block.tensors_to_compute_grads()
    assert isinstance(outputs, tuple) and outputs[1] is towers[1][1]
    grads_list = ((tf.ones([2, 4]), tf.ones([1, 4])),)

    inputs, packed = block._process_data(grads_list)
    assert len(inputs) == 1 and isinstance(inputs[0], utils.PartitionedTensor)
    assert inputs[0].tensors == [towers[0][0], towers[1][0]]
    assert len(packed) == 1 and packed[0][0].tensors == list(grads_list[0])

    monkeypatch.setattr(ff, "TOWER_STRATEGY", "separate")
    inputs, packed = make_block()._process_data(grads_list)
    assert inputs == (towers[0][0], towers[1][0]) and packed == grads_list

    monkeypatch.setattr(ff, "TOWER_STRATEGY", "bogus")
    with pytest.raises(ValueError, match="TOWER_STRATEGY"):
        make_block()._process_data(grads_list)
