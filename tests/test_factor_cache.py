"""FactorCache: one factor per (class, args), built with its collection's config."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac.ops import fisher_blocks as fb
from kfac.ops import fisher_factors as ff
from kfac.ops import layer_collection as lc_lib
from kfac.ops._config import KfacConfig
from kfac.ops._factors.cache import FactorCache


def test_same_arguments_give_one_factor_in_the_collection_scope(graph):
    cache = FactorCache(graph, "scope_a", KfacConfig())
    inputs = tf.ones([4, 3])
    first = cache.make_or_get_factor(ff.FullyConnectedKroneckerFactor, (((inputs,),)))
    again = cache.make_or_get_factor(ff.FullyConnectedKroneckerFactor, (((inputs,),)))
    other = cache.make_or_get_factor(
        ff.FullyConnectedKroneckerFactor, (((inputs,),), True)
    )
    assert first is again and first is not other
    assert list(cache.factors.values()) == [first, other]
    assert first.cov_shape == [3, 3] and other.cov_shape == [4, 4]


def test_unhashable_arguments_name_the_pair(graph):
    cache = FactorCache(graph, "scope_b", KfacConfig())
    with pytest.raises(TypeError, match="cannot be hashed"):
        cache.make_or_get_factor(ff.FullyConnectedKroneckerFactor, ([[1]],))


def test_factors_and_blocks_use_the_collection_config(graph):
    config = KfacConfig(init_covariances_at_zero=True, pi_type="off")
    collection = lc_lib.LayerCollection(config=config)
    block = fb.FullyConnectedKFACBasicFB(collection)
    block.register_additional_tower(tf.ones([2, 3]), tf.ones([2, 4]))
    block.instantiate_factors(((tf.ones([2, 4]),),), 0.25)
    factors = list(collection.get_factors())
    assert [factor.config for factor in factors] == [config, config]
    # A constant changed afterwards does not reach this collection's factors.
    ff.set_global_constants(init_covariances_at_zero=False)
    with tf.variable_scope("vars"):
        for factor in factors:
            factor.instantiate_cov_variables()
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        covs = sess.run([factor.get_cov_var() for factor in factors])
    np.testing.assert_array_equal(covs[0], np.zeros([3, 3]))
    np.testing.assert_array_equal(covs[1], np.zeros([4, 4]))
    # pi "off": both factors get sqrt(damping), whatever their traces.
    values = [block._input_damping_func(), block._output_damping_func()]
    np.testing.assert_allclose(values, [0.5, 0.5])
