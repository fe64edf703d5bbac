"""Tests for kfac.ops.layer_collection (API.md §6)."""

import math
from unittest import mock

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac.ops import fisher_blocks as fb
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


def _fc(batch=4, fan_in=3, fan_out=2, name="fc", bias=True):
    w = tf.get_variable(name + "_w", [fan_in, fan_out])
    b = tf.get_variable(name + "_b", [fan_out])
    x = tf.placeholder(tf.float32, [batch, fan_in])
    pre = tf.matmul(x, w) + b if bias else tf.matmul(x, w)
    return ((w, b) if bias else w), x, pre


def _conv(bias=True, padding="SAME", name="conv"):
    w = tf.get_variable(name + "_w", [2, 2, 3, 5])
    b = tf.get_variable(name + "_b", [5])
    x = tf.placeholder(tf.float32, [2, 4, 4, 3])
    out = tf.nn.conv2d(x, w, [1, 1, 1, 1], padding) + b
    return ((w, b) if bias else w), x, out


class FakeBlock(object):
    """Stands in for a FisherBlock where only registration is exercised."""


class OtherFakeBlock(object):
    pass


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
# Block types per registration method and approximation.


def _register(lc, kind, approx=None, reuse=lc_lib.VARIABLE_SCOPE):
    """Registers one layer of `kind`; returns its params key."""
    if kind == "fully_connected":
        params, x, pre = _fc()
        lc.register_fully_connected(params, x, pre, approx=approx, reuse=reuse)
    elif kind == "conv2d":
        params, x, pre = _conv()
        lc.register_conv2d(
            params, [1, 1, 1, 1], "SAME", x, pre, approx=approx, reuse=reuse
        )
    elif kind == "generic":
        params = tf.get_variable("g", [3])
        lc.register_generic(params, 8, approx=approx, reuse=reuse)
    elif kind == "embedding":
        params = tf.get_variable("emb", [6, 2])
        ids = tf.placeholder(tf.int32, [4])
        lc.register_embedding(
            params, ids, tf.gather(params, ids), approx=approx, reuse=reuse
        )
    elif kind == "fully_connected_multi":
        w = tf.get_variable("w_multi", [3, 2])
        xs = [tf.placeholder(tf.float32, [4, 3]) for _ in range(2)]
        params = w
        lc.register_fully_connected_multi(
            w, xs, [tf.matmul(x, w) for x in xs], approx=approx, reuse=reuse
        )
    elif kind == "conv2d_multi":
        w = tf.get_variable("w_conv_multi", [1, 1, 3, 2])
        xs = [tf.placeholder(tf.float32, [2, 4, 4, 3]) for _ in range(2)]
        params = w
        lc.register_conv2d_multi(
            w,
            [1, 1, 1, 1],
            "SAME",
            xs,
            [tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME") for x in xs],
            approx=approx,
            reuse=reuse,
        )
    elif kind == "embedding_multi":
        params = tf.get_variable("emb_multi", [6, 2])
        ids = [tf.placeholder(tf.int32, [4]) for _ in range(3)]
        lc.register_embedding_multi(
            params, ids, [tf.gather(params, i) for i in ids], approx=approx, reuse=reuse
        )
    else:
        raise AssertionError(kind)
    return params


@pytest.mark.parametrize(
    "kind,approx,block_class",
    [
        ("fully_connected", None, fb.FullyConnectedKFACBasicFB),
        ("fully_connected", "kron", fb.FullyConnectedKFACBasicFB),
        ("fully_connected", "diagonal", fb.FullyConnectedDiagonalFB),
        ("conv2d", None, fb.ConvKFCBasicFB),
        ("conv2d", "diagonal", fb.ConvDiagonalFB),
        ("generic", None, fb.FullFB),
        ("generic", "diagonal", fb.NaiveDiagonalFB),
        ("embedding", None, fb.EmbeddingKFACFB),
        ("fully_connected_multi", None, fb.FullyConnectedMultiIndepFB),
        ("fully_connected_multi", "kron_series_1", fb.FullyConnectedSeriesFB),
        ("fully_connected_multi", "kron_series_2", fb.FullyConnectedSeriesFB),
        ("conv2d_multi", None, fb.ConvKFCBasicMultiIndepFB),
        ("embedding_multi", None, fb.EmbeddingKFACMultiIndepFB),
    ],
)
def test_registration_builds_block_class(kind, approx, block_class):
    lc = LayerCollection()
    params = _register(lc, kind, approx)
    block = lc.fisher_blocks[params]
    assert type(block) is block_class
    assert block.num_registered_towers == 1
    assert lc.registered_variables == tuple(utils.ensure_sequence(params))


@pytest.mark.parametrize("approx,option", [("kron_series_1", 1), ("kron_series_2", 2)])
def test_series_approximations_select_option(approx, option):
    lc = LayerCollection()
    params = _register(lc, "fully_connected_multi", approx)
    assert lc.fisher_blocks[params]._option == fb.SeriesFBApproximation(option)


def test_conv2d_blocks_record_bias_and_configuration():
    lc = LayerCollection()
    params, x, out = _conv(bias=True)
    lc.register_conv2d(params, [1, 1, 1, 1], "SAME", x, out)
    block = lc.fisher_blocks[params]
    assert block._has_bias
    assert block._padding == "SAME"
    assert tuple(block._strides) == (1, 1, 1, 1)
    lc2 = LayerCollection()
    w, x, out = _conv(bias=False, name="conv2")
    lc2.register_conv2d(w, [1, 1, 1, 1], "SAME", x, out, approx="diagonal")
    assert not lc2.fisher_blocks[w]._has_bias


def test_register_convolution_and_separable_conv2d():
    lc = LayerCollection()
    w = tf.get_variable("w1d", [3, 2, 4])
    x = tf.placeholder(tf.float32, [2, 8, 2])
    out = tf.nn.convolution(x, w, "VALID", strides=[2])
    lc.register_convolution(w, x, out, "VALID", strides=[2])
    assert type(lc.fisher_blocks[w]) is fb.ConvKFCBasicFB

    depthwise = tf.get_variable("dw", [3, 3, 2, 2])
    pointwise = tf.get_variable("pw", [1, 1, 4, 5])
    images = tf.placeholder(tf.float32, [2, 5, 5, 2])
    mid = tf.nn.depthwise_conv2d(images, depthwise, [1, 1, 1, 1], "SAME")
    final = tf.nn.conv2d(mid, pointwise, [1, 1, 1, 1], "VALID")
    lc.register_separable_conv2d(
        depthwise, pointwise, images, mid, final, [1, 1, 1, 1], "SAME"
    )
    assert type(lc.fisher_blocks[depthwise]) is fb.DepthwiseConvDiagonalFB
    assert type(lc.fisher_blocks[pointwise]) is fb.ConvKFCBasicFB
    assert lc._get_use_count_map()[depthwise] == 1
    assert lc._get_use_count_map()[pointwise] == 1
    assert lc.fisher_blocks[pointwise]._inputs == [mid]


@pytest.mark.parametrize(
    "setter,kind,value,block_class",
    [
        (
            "set_default_fully_connected_approximation",
            "fully_connected",
            "diagonal",
            fb.FullyConnectedDiagonalFB,
        ),
        ("set_default_conv2d_approximation", "conv2d", "diagonal", fb.ConvDiagonalFB),
        (
            "set_default_generic_approximation",
            "generic",
            "diagonal",
            fb.NaiveDiagonalFB,
        ),
        (
            "set_default_embedding_approximation",
            "embedding",
            "kron",
            fb.EmbeddingKFACFB,
        ),
        (
            "set_default_fully_connected_multi_approximation",
            "fully_connected_multi",
            "kron_series_2",
            fb.FullyConnectedSeriesFB,
        ),
    ],
)
def test_default_setters(setter, kind, value, block_class):
    lc = LayerCollection()
    getattr(lc, setter)(value)
    assert getattr(lc, "default_{}_approximation".format(kind)) == value
    params = _register(lc, kind)
    assert type(lc.fisher_blocks[params]) is block_class


def test_default_approximations():
    lc = LayerCollection()
    assert lc.default_generic_approximation == "full"
    assert lc.default_fully_connected_approximation == "kron"
    assert lc.default_conv2d_approximation == "kron"
    assert lc.default_embedding_approximation == "kron"
    assert lc.default_fully_connected_multi_approximation == "kron_indep"
    assert lc.default_conv2d_multi_approximation == "kron_indep"
    assert lc.default_embedding_multi_approximation == "kron_indep"


@pytest.mark.parametrize(
    "setter,value",
    [
        ("set_default_generic_approximation", "kron"),
        ("set_default_embedding_approximation", "diagonal"),
        ("set_default_fully_connected_approximation", "full"),
        ("set_default_conv2d_approximation", "kron_indep"),
        ("set_default_fully_connected_multi_approximation", "kron"),
    ],
)
def test_default_setters_reject_unknown_values(setter, value):
    lc = LayerCollection()
    with pytest.raises(ValueError, match="Bad value '{}'".format(value)):
        getattr(lc, setter)(value)


# --------------------------------------------------------------------------
# Approximation resolution and linked parameters.


def test_get_block_type_resolution_order():
    lc = LayerCollection()
    table = {"a": FakeBlock, "b": OtherFakeBlock}
    x = tf.get_variable("x", [1])
    assert lc._get_block_type(x, None, "a", table) == (FakeBlock, "a")
    lc.define_linked_parameters(x, approximation="b")
    assert lc._get_linked_approx(x) == "b"
    assert lc._get_block_type(x, None, "a", table) == (OtherFakeBlock, "b")
    assert lc._get_block_type(x, "a", "b", table) == (FakeBlock, "a")
    with pytest.raises(ValueError, match=r"Bad value 'c' for approx.*\['a', 'b'\]"):
        lc._get_block_type(x, "c", "a", table)


def test_linked_parameters_choose_approximation():
    w0, x0, pre0 = _fc(name="l0", bias=False)
    w1, x1, pre1 = _fc(name="l1", bias=False)
    b0, b1 = tf.get_variable("b0", [2]), tf.get_variable("b1", [2])
    lc = LayerCollection()
    lc.define_linked_parameters(w0, approximation="diagonal")
    lc.define_linked_parameters(w1, approximation="diagonal")
    lc.define_linked_parameters(b0, approximation="full")
    lc.define_linked_parameters(b1, approximation="full")
    lc.register_fully_connected(w0, x0, pre0)
    lc.register_fully_connected(w1, x1, pre1, approx="kron")
    lc.register_generic(b0, batch_size=1)
    lc.register_generic(b1, batch_size=1, approx="diagonal")
    assert type(lc.fisher_blocks[w0]) is fb.FullyConnectedDiagonalFB
    assert type(lc.fisher_blocks[w1]) is fb.FullyConnectedKFACBasicFB
    assert type(lc.fisher_blocks[b0]) is fb.FullFB
    assert type(lc.fisher_blocks[b1]) is fb.NaiveDiagonalFB
    assert lc.linked_parameters[frozenset([w0])] == "diagonal"


def test_linked_parameters_errors():
    x, y, z, u = [tf.get_variable(n, [1]) for n in "xyzu"]
    lc = LayerCollection()
    lc.register_block((x, y), "block")
    with pytest.raises(ValueError, match="y:0 was already registered"):
        lc.define_linked_parameters(y)  # part of a registered key
    lc.define_linked_parameters((x, y))  # exactly the registered key is fine
    lc.define_linked_parameters((z, u))
    with pytest.raises(ValueError, match="z:0 was already linked"):
        lc.define_linked_parameters(z)  # a subset of a linked group
    with pytest.raises(ValueError, match="already linked"):
        lc.define_linked_parameters((z, u))
    assert set(lc.linked_parameters) == {frozenset([x, y]), frozenset([z, u])}


# --------------------------------------------------------------------------
# Towers and uses.


@pytest.mark.parametrize("kind", ["fully_connected", "conv2d", "embedding", "generic"])
def test_reuse_adds_towers_and_uses(kind):
    lc = LayerCollection()
    params = _register(lc, kind)
    block = lc.fisher_blocks[params]
    with tf.variable_scope("tower_1", reuse=True):
        # Same params registered again with fresh data: a second tower.
        if kind == "fully_connected":
            x = tf.placeholder(tf.float32, [4, 3])
            lc.register_fully_connected(params, x, tf.matmul(x, params[0]) + params[1])
        elif kind == "conv2d":
            x = tf.placeholder(tf.float32, [2, 4, 4, 3])
            lc.register_conv2d(
                params,
                [1, 1, 1, 1],
                "SAME",
                x,
                tf.nn.conv2d(x, params[0], [1, 1, 1, 1], "SAME"),
            )
        elif kind == "embedding":
            ids = tf.placeholder(tf.int32, [4])
            lc.register_embedding(params, ids, tf.gather(params, ids))
        else:
            lc.register_generic(params, 8)
    assert lc.fisher_blocks[params] is block
    assert block.num_registered_towers == 2
    expected_uses = math.inf if kind == "generic" else 2
    for var in utils.ensure_sequence(params):
        assert lc._get_use_count_map()[var] == expected_uses


def test_fully_connected_reuse_keywords():
    params, x, pre = _fc()
    lc = LayerCollection()
    lc.register_fully_connected(params, x, pre)
    with pytest.raises(ValueError, match="already in LayerCollection"):
        lc.register_fully_connected(params, x, pre, reuse=False)
    lc.register_fully_connected(params, x, pre, reuse=True)
    with pytest.raises(ValueError, match="FullyConnectedKFACBasicFB"):
        lc.register_fully_connected(params, x, pre, approx="diagonal", reuse=True)
    lc2 = LayerCollection()
    with pytest.raises(KeyError):
        lc2.register_fully_connected(params, x, pre, reuse=True)
    assert len(lc2.fisher_blocks) == 0 and not lc2._get_use_count_map()


def test_multi_registrations_count_uses_per_listed_tensor_or_folded_tensor():
    lc = LayerCollection()
    w = tf.get_variable("w", [3, 2])
    xs = [tf.placeholder(tf.float32, [4, 3]) for _ in range(3)]
    lc.register_fully_connected_multi(w, xs, [tf.matmul(x, w) for x in xs])
    assert lc._get_use_count_map()[w] == 3

    # Folded format: one [num_uses * batch, in] tensor reads the weights once.
    v = tf.get_variable("v", [3, 2])
    folded = tf.placeholder(tf.float32, [12, 3])
    lc.register_fully_connected_multi(v, folded, tf.matmul(folded, v), num_uses=3)
    assert lc._get_use_count_map()[v] == 1
    assert lc.fisher_blocks[v]._num_uses == 3
    # Another tower of the folded layer does not need num_uses again.
    with tf.variable_scope("tower_1", reuse=True):
        lc.register_fully_connected_multi(v, folded, tf.matmul(folded, v))
    assert lc._get_use_count_map()[v] == 2


def test_add_uses_and_use_count_map():
    lc = LayerCollection()
    lc._add_uses("a", 1)
    lc._add_uses(("a", "c"), 2)
    lc._add_uses(["b", "c"], 1)
    assert dict(lc._get_use_count_map()) == {"a": 3, "b": 1, "c": 3}


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
    params, x, pre = _fc()
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


# --------------------------------------------------------------------------
# Registration-time validation.


def _fc_case(
    w_shape=(3, 4), b_shape=(4,), x_shape=(8, 3), y_shape=(8, 4), x_dtype=tf.float32
):
    def register(lc):
        w = tf.placeholder(tf.float32, w_shape)
        b = tf.placeholder(tf.float32, b_shape)
        lc.register_fully_connected(
            (w, b),
            tf.placeholder(x_dtype, x_shape),
            tf.placeholder(tf.float32, y_shape),
        )

    return register


def _conv_case(
    w_shape=(2, 2, 3, 5),
    x_shape=(2, 4, 4, 3),
    y_shape=(2, 4, 4, 5),
    strides=(1, 1, 1, 1),
    padding="SAME",
    data_format=None,
    dilations=None,
    approx=None,
):
    def register(lc):
        lc.register_conv2d(
            tf.placeholder(tf.float32, w_shape),
            list(strides),
            padding,
            tf.placeholder(tf.float32, x_shape),
            tf.placeholder(tf.float32, y_shape),
            data_format=data_format,
            dilations=dilations,
            approx=approx,
        )

    return register


def _call(method, *args, **kwargs):
    return lambda lc: getattr(lc, method)(*args, **kwargs)


def _placeholder(shape, dtype=tf.float32):
    return lambda: tf.placeholder(dtype, shape)


VALIDATION_CASES = {
    "fc inputs vs weights": (
        _fc_case(x_shape=(8, 5)),
        r"`inputs` has shape \(8, 5\).*\[batch, 3\]",
    ),
    "fc outputs last dim": (
        _fc_case(y_shape=(8, 6)),
        r"`outputs` has shape \(8, 6\).*\[batch, 4\]",
    ),
    "fc bias shape": (_fc_case(b_shape=(5,)), r"`params\[1\]` has shape \(5,\).*\[4\]"),
    "fc weights rank": (_fc_case(w_shape=(3, 4, 1)), r"`params\[0\]` must have rank 2"),
    "fc inputs rank": (_fc_case(x_shape=(8, 3, 1)), r"`inputs` must have rank 2"),
    "fc batch sizes": (_fc_case(y_shape=(7, 4)), r"same batch size"),
    "fc mixed dtypes": (_fc_case(x_dtype=tf.float64), r"`inputs` float64"),
    "fc bad approx": (
        lambda lc: lc.register_fully_connected(
            tf.placeholder(tf.float32, (3, 4)),
            tf.placeholder(tf.float32, (8, 3)),
            tf.placeholder(tf.float32, (8, 4)),
            approx="foo",
        ),
        r"Bad value 'foo' for approx.*\['diagonal', 'kron'\]",
    ),
    "conv filter rank": (_conv_case(w_shape=(2, 3, 5)), r"`params` must have rank 4"),
    "conv strides": (_conv_case(strides=(1, 1)), r"`strides` must be a list of 4"),
    "conv padding": (_conv_case(padding="same"), r"`padding` must be one of"),
    "conv data format": (
        _conv_case(data_format="NCHW"),
        r"`data_format` must be None or 'NHWC'",
    ),
    "conv dilations": (_conv_case(dilations=[2, 1, 1, 1]), r"`dilations`"),
    "conv in channels": (
        _conv_case(x_shape=(2, 4, 4, 2)),
        r"`inputs` has shape \(2, 4, 4, 2\)",
    ),
    "conv out channels": (
        _conv_case(y_shape=(2, 4, 4, 6)),
        r"`outputs` has shape \(2, 4, 4, 6\)",
    ),
    "conv spatial (VALID)": (
        _conv_case(padding="VALID"),
        r"expected shape \[batch, 3, 3, 5\]",
    ),
    "conv spatial (strides)": (_conv_case(strides=(1, 2, 2, 1)), r"\[batch, 2, 2, 5\]"),
    "conv diagonal strides": (
        _conv_case(strides=(2, 1, 1, 1), approx="diagonal"),
        r"`strides`",
    ),
    "conv bad approx": (_conv_case(approx="full"), r"Bad value 'full'"),
    "convolution approx": (
        lambda lc: lc.register_convolution(
            tf.placeholder(tf.float32, (3, 2, 4)),
            tf.placeholder(tf.float32, (2, 8, 2)),
            tf.placeholder(tf.float32, (2, 8, 4)),
            "SAME",
            approx="diagonal",
        ),
        r"Bad value 'diagonal'.*\['kron'\]",
    ),
    "convolution 4-entry strides": (
        lambda lc: lc.register_convolution(
            tf.placeholder(tf.float32, (3, 3, 2, 4)),
            tf.placeholder(tf.float32, (2, 8, 8, 2)),
            tf.placeholder(tf.float32, (2, 8, 8, 4)),
            "SAME",
            strides=[1, 1, 1, 1],
        ),
        r"`strides` must be None or a list of 2",
    ),
    "depthwise outputs": (
        lambda lc: lc.register_depthwise_conv2d(
            tf.placeholder(tf.float32, (3, 3, 2, 2)),
            tf.placeholder(tf.float32, (2, 5, 5, 2)),
            tf.placeholder(tf.float32, (2, 5, 5, 2)),
            [1, 1, 1, 1],
            "SAME",
        ),
        r"`outputs` has shape \(2, 5, 5, 2\).*\[batch, 5, 5, 4\]",
    ),
    "depthwise data format": (
        lambda lc: lc.register_depthwise_conv2d(
            tf.placeholder(tf.float32, (3, 3, 2, 2)),
            tf.placeholder(tf.float32, (2, 5, 5, 2)),
            tf.placeholder(tf.float32, (2, 5, 5, 4)),
            [1, 1, 1, 1],
            "SAME",
            data_format="NCHW",
        ),
        r"`data_format`",
    ),
    "depthwise approx": (
        lambda lc: lc.register_depthwise_conv2d(
            tf.placeholder(tf.float32, (3, 3, 2, 2)),
            tf.placeholder(tf.float32, (2, 5, 5, 2)),
            tf.placeholder(tf.float32, (2, 5, 5, 4)),
            [1, 1, 1, 1],
            "SAME",
            approx="kron",
        ),
        r"Bad value 'kron'.*\['diagonal'\]",
    ),
    "embedding bias": (
        lambda lc: lc.register_embedding(
            (tf.placeholder(tf.float32, (6, 2)), tf.placeholder(tf.float32, (2,))),
            tf.placeholder(tf.int32, (4,)),
            tf.placeholder(tf.float32, (4, 2)),
        ),
        r"Bias not supported",
    ),
    "embedding float ids": (
        lambda lc: lc.register_embedding(
            tf.placeholder(tf.float32, (6, 2)),
            tf.placeholder(tf.float32, (4,)),
            tf.placeholder(tf.float32, (4, 2)),
        ),
        r"`inputs` must hold integer ids; got dtype float32",
    ),
    "embedding dim": (
        lambda lc: lc.register_embedding(
            tf.placeholder(tf.float32, (6, 2)),
            tf.placeholder(tf.int32, (4,)),
            tf.placeholder(tf.float32, (4, 3)),
        ),
        r"`outputs` has shape \(4, 3\)",
    ),
    "generic batch size": (
        lambda lc: lc.register_generic(tf.placeholder(tf.float32, (3,)), 0),
        r"`batch_size`",
    ),
    "normal var": (
        lambda lc: lc.register_normal_predictive_distribution(
            tf.placeholder(tf.float32, (4, 2)), var=tf.ones([2])
        ),
        r"`var` must be a scalar; got shape \(2,\)",
    ),
    "normal var sign": (
        lambda lc: lc.register_normal_predictive_distribution(
            tf.placeholder(tf.float32, (4, 2)), var=-1.0
        ),
        r"`var` must be positive",
    ),
    "multi lengths": (
        lambda lc: lc.register_fully_connected_multi(
            tf.placeholder(tf.float32, (3, 2)),
            [tf.placeholder(tf.float32, (4, 3))] * 2,
            [tf.placeholder(tf.float32, (4, 2))] * 3,
        ),
        r"number of uses disagrees: inputs 2, outputs 3",
    ),
    "multi folded without num_uses": (
        lambda lc: lc.register_fully_connected_multi(
            tf.placeholder(tf.float32, (3, 2)),
            tf.placeholder(tf.float32, (8, 3)),
            tf.placeholder(tf.float32, (8, 2)),
        ),
        r"`num_uses` is required",
    ),
    "multi folded rows": (
        lambda lc: lc.register_fully_connected_multi(
            tf.placeholder(tf.float32, (3, 2)),
            tf.placeholder(tf.float32, (7, 3)),
            tf.placeholder(tf.float32, (7, 2)),
            num_uses=2,
        ),
        r"folded `inputs` of shape \(7, 3\)",
    ),
    "multi use shape": (
        lambda lc: lc.register_fully_connected_multi(
            tf.placeholder(tf.float32, (3, 2)),
            [tf.placeholder(tf.float32, (4, 3)), tf.placeholder(tf.float32, (4, 5))],
            [tf.placeholder(tf.float32, (4, 2))] * 2,
        ),
        r"`inputs\[1\]` has shape \(4, 5\)",
    ),
    "conv multi channels": (
        lambda lc: lc.register_conv2d_multi(
            tf.placeholder(tf.float32, (1, 1, 3, 2)),
            [1, 1, 1, 1],
            "SAME",
            [tf.placeholder(tf.float32, (2, 4, 4, 3))] * 2,
            [tf.placeholder(tf.float32, (2, 4, 4, 3))] * 2,
        ),
        r"`outputs\[0\]` has shape \(2, 4, 4, 3\)",
    ),
    "embedding multi bias": (
        lambda lc: lc.register_embedding_multi(
            (tf.placeholder(tf.float32, (6, 2)), tf.placeholder(tf.float32, (2,))),
            [tf.placeholder(tf.int32, (4,))],
            [tf.placeholder(tf.float32, (4, 2))],
        ),
        r"Bias not supported",
    ),
}


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_registration_validation_errors(case):
    register, pattern = VALIDATION_CASES[case]
    lc = LayerCollection()
    with pytest.raises(ValueError, match=pattern) as error:
        register(lc)
    assert str(error.value).startswith("register_") or "Bad value" in str(error.value)
    assert len(lc.fisher_blocks) == 0 and not lc.losses
    assert not lc._get_use_count_map()


def test_validation_accepts_unknown_dimensions():
    lc = LayerCollection()
    w = tf.get_variable("w", [3, 4])
    x = tf.placeholder(tf.float32, [None, 3])
    lc.register_fully_connected(w, x, tf.matmul(x, w))
    unknown = tf.placeholder(tf.float32)
    lc.register_fully_connected(tf.get_variable("v", [3, 4]), unknown, unknown)
    conv_w = tf.get_variable("cw", [3, 3, 2, 4])
    images = tf.placeholder(tf.float32, [None, None, None, 2])
    lc.register_conv2d(
        conv_w,
        [1, 2, 2, 1],
        "VALID",
        images,
        tf.nn.conv2d(images, conv_w, [1, 2, 2, 1], "VALID"),
    )
    assert len(lc.fisher_blocks) == 3
