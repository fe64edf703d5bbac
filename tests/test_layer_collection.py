"""Tests for kfac.ops.layer_collection (API.md §6): the collection, blocks, losses.

Layer registration is tested in test_layer_collection_registration.py, the
checks of registration arguments in test_layer_collection_validation.py.
"""

import math
from unittest import mock

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from layer_collection_helpers import FakeBlock
from layer_collection_helpers import OtherFakeBlock
from layer_collection_helpers import fc_layer

from kfac.ops import fisher_factors as ff
from kfac.ops import layer_collection as lc_lib
from kfac.ops import loss_functions as lf
from kfac.ops import utils

LayerCollection = lc_lib.LayerCollection


@pytest.fixture(autouse=True)
def _fresh_graph():
    with tf.Graph().as_default():
        yield
    lc_lib.set_default_layer_collection(None)


# --------------------------------------------------------------------------
# Constants, LayerParametersDict, default collection.


def test_constants():
    assert lc_lib.APPROX_KRONECKER_NAME == "kron"
    assert lc_lib.APPROX_DIAGONAL_NAME == "diagonal"
    assert lc_lib.APPROX_FULL_NAME == "full"
    assert lc_lib.APPROX_KRONECKER_INDEP_NAME == "kron_indep"
    assert lc_lib.APPROX_KRONECKER_SERIES_1_NAME == "kron_series_1"
    assert lc_lib.APPROX_KRONECKER_SERIES_2_NAME == "kron_series_2"
    assert lc_lib.VARIABLE_SCOPE == "VARIABLE_SCOPE"


def test_layer_parameters_dict_canonicalises_keys():
    d = lc_lib.LayerParametersDict()
    x, y0, y1, z0, z1 = [tf.constant(0) for _ in range(5)]
    keys = [x, (y0, y1), [z0, z1]]
    for key in keys:
        d[key] = str(key)
    for key in keys:
        assert key in d
        assert d[key] == str(key)
    assert (z0, z1) in d and list(d) == [x, (y0, y1), (z0, z1)]


def test_layer_parameters_dict_rejects_overlap_and_inserts_nothing():
    d = lc_lib.LayerParametersDict()
    x, y = tf.constant(0), tf.constant(1)
    d[x] = "value"
    with pytest.raises(ValueError, match="already present"):
        d[(x, y)] = "value"
    assert x in d and y not in d and (x, y) not in d
    d[y] = "y"  # y was not recorded by the failed insertion


def test_layer_parameters_dict_delete_forgets_tuple_key_tensors():
    # The original failed to delete tuple keys (API.md §12).
    d = lc_lib.LayerParametersDict()
    x, y = tf.constant(0), tf.constant(1)
    d[[x, y]] = "pair"
    del d[[x, y]]
    assert (x, y) not in d
    d[x] = "x alone"  # no longer "already present"
    assert d.pop(x) == "x alone"
    d[(x, y)] = "again"
    assert list(d.items()) == [((x, y), "again")]


def test_default_layer_collection():
    with pytest.raises(ValueError, match="none is set"):
        lc_lib.get_default_layer_collection()
    lc = LayerCollection()
    with lc.as_default():
        assert lc_lib.get_default_layer_collection() is lc
        with pytest.raises(ValueError, match="already set"):
            lc_lib.set_default_layer_collection(LayerCollection())
    with pytest.raises(ValueError):
        lc_lib.get_default_layer_collection()
    lc_lib.set_default_layer_collection(lc)
    lc_lib.set_default_layer_collection(None)
    with pytest.raises(ValueError):
        lc_lib.get_default_layer_collection()


def test_construction_reserves_unique_scopes_and_makes_no_variables():
    first, second = LayerCollection(), LayerCollection(name="LayerCollection")
    assert first._var_scope == "LayerCollection"
    assert second._var_scope == "LayerCollection_1"
    assert first.graph is tf.get_default_graph()
    assert first.subgraph is None
    assert tf.global_variables() == []


# --------------------------------------------------------------------------
# register_block.


def test_register_block_inserts_and_returns_block():
    lc = LayerCollection()
    x, y = tf.get_variable("x", [1]), tf.get_variable("y", [1])
    block = FakeBlock()
    assert lc.register_block((x, y), block) is block
    assert lc.fisher_blocks[(x, y)] is block
    assert lc.registered_variables == (x, y)


def test_register_block_reuse_true_without_block_is_key_error():
    lc = LayerCollection()
    x = tf.get_variable("x", [1])
    with pytest.raises(KeyError):
        lc.register_block(x, FakeBlock(), reuse=True)
    assert x not in lc.fisher_blocks


def test_register_block_reuse_returns_existing_or_rejects_other_type():
    lc = LayerCollection()
    x = tf.get_variable("x", [1])
    first = FakeBlock()
    lc.register_block(x, first)
    assert lc.register_block(x, FakeBlock(), reuse=True) is first
    with pytest.raises(ValueError, match="OtherFakeBlock"):
        lc.register_block(x, OtherFakeBlock(), reuse=True)


def test_register_block_duplicate_without_reuse():
    lc = LayerCollection()
    x = tf.get_variable("x", [1])
    lc.register_block(x, "foo")
    with pytest.raises(ValueError, match="already in LayerCollection"):
        lc.register_block(x, "foo", reuse=False)


@pytest.mark.parametrize(
    "existing_key,new_key",
    [
        ("xz", "xy"),  # tuple key sharing a variable with another tuple key
        ("xy", "x"),  # single variable already inside a tuple key
        ("x", "xy"),  # tuple containing an already registered variable
    ],
)
def test_register_block_variable_already_registered(existing_key, new_key):
    variables = {name: tf.get_variable(name, [1]) for name in "xyz"}

    def key(spec):
        return variables[spec] if len(spec) == 1 else tuple(variables[c] for c in spec)

    lc = LayerCollection()
    lc.fisher_blocks = {key(existing_key): "1"}  # tests may assign a plain dict
    with pytest.raises(ValueError, match="was already registered"):
        lc.register_block(key(new_key), "foo")
    assert len(lc.fisher_blocks) == 1


def test_register_block_auto_reuse():
    lc = LayerCollection()
    x = tf.get_variable("x", [1])
    first = FakeBlock()
    assert lc.register_block(x, first, reuse=tf.AUTO_REUSE) is first
    assert lc.register_block(x, FakeBlock(), reuse=tf.AUTO_REUSE) is first


@pytest.mark.parametrize(
    "scope_reuse,outcome",
    [
        (True, "reused"),
        (tf.AUTO_REUSE, "reused"),
        (False, "duplicate"),
        (None, "duplicate"),
    ],
)
def test_register_block_takes_reuse_from_variable_scope(scope_reuse, outcome):
    lc = LayerCollection()
    x = tf.get_variable("x", [1])
    first = FakeBlock()
    lc.register_block(x, first)
    with tf.variable_scope("tower", reuse=scope_reuse):
        if outcome == "reused":
            assert lc.register_block(x, FakeBlock()) is first
        else:
            with pytest.raises(ValueError, match="already in LayerCollection"):
                lc.register_block(x, FakeBlock())


# --------------------------------------------------------------------------
# Losses.


def test_loss_registration_towers_and_names():
    lc = LayerCollection()
    logits = [tf.constant([[1.0, 2.0]]) for _ in range(3)]
    lc.register_categorical_predictive_distribution(logits[0], name="loss")
    lc.register_categorical_predictive_distribution(logits[1], name="loss", reuse=True)
    lc.register_normal_predictive_distribution(logits[2])
    assert [len(t) for t in lc.towers_by_loss] == [2, 1]
    assert [loss.inputs for loss in lc.losses] == logits
    assert isinstance(lc.losses[0], lf.CategoricalLogitsNegativeLogProbLoss)
    assert isinstance(lc.losses[2], lf.NormalMeanNegativeLogProbLoss)
    assert lc.loss_colocation_ops[lc.losses[1]] is logits[1]


def test_loss_registration_key_errors():
    lc = LayerCollection()
    logits = tf.constant([[1.0, 2.0]])
    with pytest.raises(KeyError):
        lc.register_categorical_predictive_distribution(logits, name="x", reuse=True)
    with tf.variable_scope("scope", reuse=True):
        with pytest.raises(KeyError):  # reuse without a name cannot find a loss
            lc.register_categorical_predictive_distribution(logits)
    lc.register_categorical_predictive_distribution(logits, name="x")
    with pytest.raises(KeyError):
        lc.register_categorical_predictive_distribution(logits, name="x", reuse=False)
    assert [len(t) for t in lc.towers_by_loss] == [1]


def test_loss_registration_fresh_names_and_auto_reuse():
    lc = LayerCollection()
    logits = tf.constant([[1.0, 2.0]])
    lc.register_multi_bernoulli_predictive_distribution(logits)
    lc.register_multi_bernoulli_predictive_distribution(logits)
    assert [len(t) for t in lc.towers_by_loss] == [1, 1]
    assert isinstance(lc.losses[0], lf.MultiBernoulliNegativeLogProbLoss)
    # AUTO_REUSE: append to an existing name, else start a new loss.
    lc.register_categorical_predictive_distribution(
        logits, name="y", reuse=tf.AUTO_REUSE
    )
    lc.register_categorical_predictive_distribution(
        logits, name="y", reuse=tf.AUTO_REUSE
    )
    assert [len(t) for t in lc.towers_by_loss] == [1, 1, 2]


def test_total_loss_categorical_anchor():
    lc = LayerCollection()
    logits = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    lc.register_categorical_predictive_distribution(logits, targets=tf.constant([0, 1]))
    expected = -sum(
        np.log(np.exp(row[t]) / np.exp(row).sum())
        for row, t in zip(np.array([[1.0, 2.0], [3.0, 4.0]]), [0, 1])
    )
    with tf.Session() as sess:
        value = sess.run(lc.total_loss())
    np.testing.assert_allclose(value, 1.6265233, rtol=1e-6)
    np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_total_loss_normal_anchor():
    lc = LayerCollection()
    mean = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    targets = np.array([[3.0, 1.0], [4.0, 2.0]], np.float32)
    lc.register_normal_predictive_distribution(
        tf.constant(mean), var=4.0, targets=tf.constant(targets)
    )
    expected = np.sum(0.5 * np.log(2 * np.pi * 4.0) + (targets - mean) ** 2 / 8.0)
    with tf.Session() as sess:
        value = sess.run(lc.total_loss())
    np.testing.assert_allclose(value, 7.6983433, rtol=1e-6)
    np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_registering_sampled_loss_twice_doubles_total_sampled_loss():
    tf.set_random_seed(200)
    logits = tf.eye(2)
    single, double = LayerCollection(), LayerCollection()
    single.register_categorical_predictive_distribution(logits, seed=200)
    double.register_categorical_predictive_distribution(logits, seed=200)
    double.register_categorical_predictive_distribution(logits, seed=200)
    with tf.Session() as sess:
        single_value, double_value = sess.run(
            [single.total_sampled_loss(), double.total_sampled_loss()]
        )
    np.testing.assert_allclose(double_value, 2 * single_value, rtol=1e-6)
    assert single_value > 0


def test_loss_evaluations_are_colocated_with_their_inputs():
    lc = LayerCollection()
    logits = tf.constant([[1.0, 2.0]], name="my_logits")
    lc.register_categorical_predictive_distribution(logits, targets=tf.constant([0]))
    [evaluation] = lc.eval_losses()
    [sampled] = lc.eval_losses_on_samples()
    for tensor in (evaluation, sampled):
        assert tensor.op.colocation_groups() == [b"loc:@my_logits"]


# --------------------------------------------------------------------------
# Factors, subgraph, check_registration.


def test_make_or_get_factor_shares_identical_args():
    lc = LayerCollection()
    key = tf.constant([1.0, 2.0])
    first = lc.make_or_get_factor(ff.FullFactor, ((key,), 16))
    assert lc.make_or_get_factor(ff.FullFactor, ((key,), 16)) is first
    lc.make_or_get_factor(ff.FullFactor, ((tf.constant([2.0, 3.0]),), 16))
    assert len(lc.get_factors()) == 2
    assert list(lc.fisher_factors) == [(ff.FullFactor, ((key,), 16))] + [
        k for k in lc.fisher_factors if k[1][0][0] is not key
    ]


def test_make_or_get_factor_unhashable_args():
    lc = LayerCollection()
    with pytest.raises(TypeError, match="cannot be hashed"):
        lc.make_or_get_factor(ff.FullFactor, ([tf.constant([1.0])], 16))


def test_create_subgraph():
    lc = LayerCollection()
    with pytest.raises(ValueError, match="at least one registered loss"):
        lc.create_subgraph()
    x = tf.constant([[1.0, 2.0]])
    logits = tf.identity(x)
    lc.register_categorical_predictive_distribution(logits)
    lc.create_subgraph()
    assert lc.subgraph.is_member(logits) and lc.subgraph.is_member(x)


def _model_with_losses(lc, reuse_weights=False):
    params, x, pre = fc_layer()
    logits = pre
    if reuse_weights:  # a second read of the weights the registration ignores
        logits = pre + tf.matmul(x, params[0])
    lc.register_categorical_predictive_distribution(logits)
    return params, x, pre


def test_check_registration_passes_for_a_correct_registration(tf_behavior):
    lc = LayerCollection()
    params, x, pre = _model_with_losses(lc)
    lc.register_fully_connected(params, x, pre)
    lc.check_registration(list(params))


def test_check_registration_reports_every_problem(tf_behavior):
    lc = LayerCollection()
    params, x, pre = _model_with_losses(lc, reuse_weights=True)
    lc.register_fully_connected(params, x, pre)
    stranger = tf.get_variable("unregistered", [2])
    with pytest.raises(ValueError) as error:
        lc.check_registration([params[0], stranger])  # bias missing from the list
    message = str(error.value)
    assert "unregistered" in message and "not registered" in message
    assert (
        "fc_w" in message
        and "wrong number of uses (1 registrations vs 2 uses)" in message
    )
    assert "1 registered variables were not included" in message and "fc_b" in message


def test_check_registration_counts_generic_as_infinite_uses():
    lc = LayerCollection()
    params, x, pre = _model_with_losses(lc, reuse_weights=True)
    lc.register_generic(params, 4)
    lc.check_registration(list(params))
    assert lc._get_use_count_map()[params[0]] == math.inf


def test_check_registration_uses_subgraph_variable_uses():
    lc = LayerCollection()
    params, x, pre = _model_with_losses(lc)
    lc.register_fully_connected(params, x, pre)
    with mock.patch.object(utils.SubGraph, "variable_uses", return_value=7):
        with pytest.raises(ValueError, match="1 registrations vs 7 uses"):
            lc.check_registration(list(params))
    # The check does not register anything as a side effect (API.md §12).
    assert set(lc._get_use_count_map()) == set(params)


def test_loss_colocation_is_public_with_the_private_alias():
    lc = LayerCollection()
    logits = tf.constant([[1.0, 2.0]], name="colocated_logits")
    lc.register_categorical_predictive_distribution(logits)
    [loss] = lc.losses
    for colocation in (lc.loss_colocation, lc._loss_colocation):
        with colocation(loss):
            op = tf.identity(logits)
        assert op.op.colocation_groups() == [b"loc:@colocated_logits"]
    with lc.loss_colocation("not a registered loss"):
        op = tf.identity(logits, name="free")
    assert op.op.colocation_groups() == [b"loc:@free"]
