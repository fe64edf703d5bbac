"""The original's module constants are the defaults of each KfacConfig made."""

from unittest import mock

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac.ops import fisher_blocks
from kfac.ops import fisher_factors
from kfac.ops import layer_collection as lc_lib
from kfac.ops import utils
from kfac.ops._config import KfacConfig


def test_assignment_reaches_the_config_the_library_reads():
    original = fisher_factors.TOWER_STRATEGY
    try:
        fisher_factors.TOWER_STRATEGY = "separate"
        assert KfacConfig.from_defaults().tower_strategy == "separate"
    finally:
        fisher_factors.TOWER_STRATEGY = original
    assert KfacConfig.from_defaults().tower_strategy == original


def test_mock_patch_object_restores_the_constants():
    with mock.patch.object(fisher_factors, "TOWER_STRATEGY", "separate"):
        assert KfacConfig.from_defaults().tower_strategy == "separate"
    assert fisher_factors.TOWER_STRATEGY == "concat"
    assert KfacConfig.from_defaults().tower_strategy == "concat"
    with mock.patch.object(fisher_blocks, "PI_TYPE", "off"):
        assert KfacConfig.from_defaults().pi_type == "off"
    assert fisher_blocks.PI_TYPE == "tracenorm"


def test_set_global_constants_is_visible_on_the_module():
    fisher_factors.set_global_constants(eigenvalue_decomposition_threshold=5)
    try:
        assert fisher_factors.EIGENVALUE_DECOMPOSITION_THRESHOLD == 5
    finally:
        fisher_factors.set_global_constants(eigenvalue_decomposition_threshold=2)


def test_every_constant_is_the_default_of_one_field():
    fisher_factors.set_global_constants(
        init_covariances_at_zero=True,
        zero_debias=True,
        eigenvalue_decomposition_threshold=7,
        eigenvalue_clipping_threshold=0.5,
        tower_strategy="separate",
    )
    fisher_blocks.set_global_constants(normalize_damping_power=0.5, pi_type="off")
    utils.set_global_constants(posdef_inv_method="eig")
    utils.POSDEF_EIG_METHOD = "svd"
    assert KfacConfig.from_defaults() == KfacConfig(
        init_covariances_at_zero=True,
        zero_debias=True,
        eigenvalue_decomposition_threshold=7,
        eigenvalue_clipping_threshold=0.5,
        tower_strategy="separate",
        normalize_damping_power=0.5,
        pi_type="off",
        posdef_inv_method="eig",
        posdef_eig_method="svd",
    )


def test_the_defaults_are_the_original_values():
    assert KfacConfig.from_defaults() == KfacConfig()


def test_a_collection_keeps_the_constants_of_when_it_was_made(graph):
    before = lc_lib.LayerCollection()
    fisher_blocks.set_global_constants(pi_type="off")
    fisher_factors.set_global_constants(tower_strategy="separate")
    after = lc_lib.LayerCollection()
    assert (before.config.pi_type, before.config.tower_strategy) == (
        "tracenorm",
        "concat",
    )
    assert (after.config.pi_type, after.config.tower_strategy) == ("off", "separate")


def test_a_config_must_be_a_kfac_config(graph):
    with pytest.raises(TypeError, match="KfacConfig"):
        lc_lib.LayerCollection(config={"pi_type": "off"})


def _fc_inverse(collection, scope, inputs, outputs, vector):
    """`block.multiply_inverse(vector)` of one dense layer after one update."""
    with tf.variable_scope(scope):
        weights = tf.get_variable("w", initializer=tf.zeros([3, 2], tf.float64))
    collection.register_fully_connected(weights, inputs, outputs)
    block = collection.fisher_blocks[weights]
    block.instantiate_factors(((outputs,),), 0.1)
    block.register_inverse()
    factors = list(collection.get_factors())
    with tf.variable_scope(scope):
        for factor in factors:
            factor.instantiate_cov_variables()
            factor.instantiate_inv_variables()
    updates = [factor.make_covariance_update_op(0.0) for factor in factors]
    inverses = [op for factor in factors for op in factor.make_inverse_update_ops()]
    return updates, inverses, block.multiply_inverse(tf.constant(vector))


def test_two_collections_with_different_settings_do_not_interfere(graph, rng):
    """One graph, one process: a "tracenorm" and an "off" collection side by side."""
    rows, grads, vector = rng.randn(8, 3), rng.randn(8, 2), rng.randn(3, 2)
    inputs, outputs = tf.constant(rows), tf.constant(grads)
    tracenorm = lc_lib.LayerCollection()
    pi_off = lc_lib.LayerCollection(config=KfacConfig(pi_type="off"))
    ops_tracenorm = _fc_inverse(tracenorm, "a", inputs, outputs, vector)
    ops_off = _fc_inverse(pi_off, "b", inputs, outputs, vector)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for updates, inverses, _ in (ops_tracenorm, ops_off):
            sess.run(updates)
            sess.run(inverses)
        result_tracenorm, result_off = sess.run([ops_tracenorm[2], ops_off[2]])
    input_cov = rows.T @ rows / 8
    output_cov = grads.T @ grads / 8
    pi = np.sqrt((np.trace(input_cov) / 3) / (np.trace(output_cov) / 2))

    def expected(input_damping, output_damping):
        left = np.linalg.inv(input_cov + input_damping * np.eye(3))
        right = np.linalg.inv(output_cov + output_damping * np.eye(2))
        return left @ vector @ right

    root = np.sqrt(0.1)
    np.testing.assert_allclose(
        result_tracenorm, expected(root * pi, root / pi), rtol=1e-9
    )
    np.testing.assert_allclose(result_off, expected(root, root), rtol=1e-9)
    assert not np.allclose(result_tracenorm, result_off)


# ------------------------------------------------ fisher_factors constants


def test_default_constants():
    assert fisher_factors.INIT_COVARIANCES_AT_ZERO is False
    assert fisher_factors.ZERO_DEBIAS is False
    assert fisher_factors.EIGENVALUE_DECOMPOSITION_THRESHOLD == 2
    assert fisher_factors.EIGENVALUE_CLIPPING_THRESHOLD == 0.0
    assert fisher_factors.TOWER_STRATEGY == "concat"


def test_set_global_constants_overwrites_only_given_values():
    fisher_factors.set_global_constants(zero_debias=True, tower_strategy="separate")
    assert (fisher_factors.ZERO_DEBIAS, fisher_factors.TOWER_STRATEGY) == (
        True,
        "separate",
    )
    assert KfacConfig.from_defaults().tower_strategy == "separate"
    fisher_factors.set_global_constants(
        init_covariances_at_zero=True,
        eigenvalue_decomposition_threshold=5,
        eigenvalue_clipping_threshold=0.25,
    )
    assert fisher_factors.INIT_COVARIANCES_AT_ZERO is True
    assert fisher_factors.EIGENVALUE_DECOMPOSITION_THRESHOLD == 5
    assert fisher_factors.EIGENVALUE_CLIPPING_THRESHOLD == 0.25
    assert (fisher_factors.ZERO_DEBIAS, fisher_factors.TOWER_STRATEGY) == (
        True,
        "separate",
    )


def test_module_attribute_assignment_forwards_to_config():
    fisher_factors.TOWER_STRATEGY = "separate"
    assert KfacConfig.from_defaults().tower_strategy == "separate"
    assert fisher_factors.FullyConnectedKroneckerFactor(
        ((tf.ones([2, 2]),),)
    ).config == (KfacConfig(tower_strategy="separate"))
    with pytest.raises(AttributeError, match="NO_SUCH_CONSTANT"):
        fisher_factors.NO_SUCH_CONSTANT  # noqa: B018


def test_unknown_tower_strategy_raises_when_building_update(graph):
    fisher_factors.set_global_constants(tower_strategy="bogus")
    factor = fisher_factors.FullyConnectedKroneckerFactor(((tf.ones([2, 2]),),))
    factor.instantiate_cov_variables()
    with pytest.raises(ValueError, match="TOWER_STRATEGY"):
        factor.make_covariance_update_op(0.5)
