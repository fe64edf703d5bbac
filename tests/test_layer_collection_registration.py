"""Tests for kfac.ops.layer_collection (API.md §6): layer registration.

Which block each register_* method and approximation builds, how the
approximation is resolved (explicit, linked, default), towers and uses.
"""

import math

import pytest
import tensorflow.compat.v1 as tf
from layer_collection_helpers import FakeBlock
from layer_collection_helpers import OtherFakeBlock
from layer_collection_helpers import conv_layer
from layer_collection_helpers import fc_layer

from kfac.ops import fisher_blocks as fb
from kfac.ops import layer_collection as lc_lib
from kfac.ops import utils

LayerCollection = lc_lib.LayerCollection

pytestmark = pytest.mark.usefixtures("graph")


# --------------------------------------------------------------------------
# Block types per registration method and approximation.


def _register(lc, kind, approx=None, reuse=lc_lib.VARIABLE_SCOPE):
    """Registers one layer of `kind`; returns its params key."""
    if kind == "fully_connected":
        params, x, pre = fc_layer()
        lc.register_fully_connected(params, x, pre, approx=approx, reuse=reuse)
    elif kind == "conv2d":
        params, x, pre = conv_layer()
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
    params, x, out = conv_layer(bias=True)
    lc.register_conv2d(params, [1, 1, 1, 1], "SAME", x, out)
    block = lc.fisher_blocks[params]
    assert block._has_bias
    assert block._padding == "SAME"
    assert tuple(block._strides) == (1, 1, 1, 1)
    lc2 = LayerCollection()
    w, x, out = conv_layer(bias=False, name="conv2")
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
    w0, x0, pre0 = fc_layer(name="l0", bias=False)
    w1, x1, pre1 = fc_layer(name="l1", bias=False)
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
    params, x, pre = fc_layer()
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


def test_public_add_uses_is_the_original_private_one():
    lc = LayerCollection()
    lc.add_uses(("a", "b"), 2)
    lc._add_uses("a", 1)
    assert dict(lc._get_use_count_map()) == {"a": 3, "b": 2}


def test_resolve_approximation_order():
    lc = LayerCollection()
    x = tf.get_variable("x", [2, 2])
    assert lc.resolve_approximation("fully_connected", x) == "kron"
    lc.set_default_fully_connected_approximation("diagonal")
    assert lc.resolve_approximation("fully_connected", x) == "diagonal"
    lc.define_linked_parameters(x, approximation="kron")
    assert lc.resolve_approximation("fully_connected", x) == "kron"
    # An explicit value wins and is returned unchecked (registration checks it).
    assert lc.resolve_approximation("fully_connected", x, "bogus") == "bogus"
    y = tf.get_variable("y", [2, 2])
    assert lc.resolve_approximation("conv2d_multi", y, None) == "kron_indep"


def test_blocks_get_the_factor_cache_not_the_collection():
    lc = LayerCollection()
    params = _register(lc, "fully_connected")
    assert lc.fisher_blocks[params]._factors is lc.factor_cache
