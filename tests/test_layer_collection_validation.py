"""Tests for kfac.ops.layer_collection (API.md §6): registration-time validation.

A bad argument to a register_* method raises a ValueError naming the method
and the argument, before anything is registered.
"""

import pytest
import tensorflow.compat.v1 as tf

from kfac.ops import layer_collection as lc_lib

LayerCollection = lc_lib.LayerCollection

pytestmark = pytest.mark.usefixtures("graph")


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


def _depthwise_case(y_shape=(2, 5, 5, 4), **kwargs):
    def register(lc):
        lc.register_depthwise_conv2d(
            tf.placeholder(tf.float32, (3, 3, 2, 2)),
            tf.placeholder(tf.float32, (2, 5, 5, 2)),
            tf.placeholder(tf.float32, y_shape),
            [1, 1, 1, 1],
            "SAME",
            **kwargs,
        )

    return register


def _embedding_case(ids_dtype=tf.int32, y_shape=(4, 2)):
    def register(lc):
        lc.register_embedding(
            tf.placeholder(tf.float32, (6, 2)),
            tf.placeholder(ids_dtype, (4,)),
            tf.placeholder(tf.float32, y_shape),
        )

    return register


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
    "fc bias matrix": (
        _fc_case(b_shape=(2, 2)),
        r"`params\[1\]` has shape \(2, 2\); expected shape \[4\]",
    ),
    # Weights [3, 4, 1] act on 12 inputs and have 1 output: the bias disagrees.
    "fc weights rank": (
        _fc_case(w_shape=(3, 4, 1)),
        r"`params\[1\]` has shape \(4,\); expected shape \[1\]",
    ),
    "fc inputs rank": (
        _fc_case(x_shape=(8, 3, 1)),
        r"`inputs` has shape \(8, 3, 1\); expected shape \[batch, \.\.\., 3\]",
    ),
    "fc rows": (
        _fc_case(x_shape=(8, 5, 3), y_shape=(8, 4)),
        r"must have the same number of rows",
    ),
    "fc batch sizes": (_fc_case(y_shape=(7, 4)), r"same batch size"),
    "fc mixed dtypes": (_fc_case(x_dtype=tf.float64), r"`inputs` float64"),
    "fc bad approx": (
        lambda lc: lc.register_fully_connected(
            tf.placeholder(tf.float32, (3, 4)),
            tf.placeholder(tf.float32, (8, 3)),
            tf.placeholder(tf.float32, (8, 4)),
            approx="foo",
        ),
        r"Bad value 'foo' for approx.*\['diagonal', 'ekfac', 'kron', 'kron_expand', "
        r"'kron_reduce'\]",
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
        _depthwise_case(y_shape=(2, 5, 5, 2)),
        r"`outputs` has shape \(2, 5, 5, 2\).*\[batch, 5, 5, 4\]",
    ),
    "depthwise data format": (
        _depthwise_case(data_format="NCHW"),
        r"`data_format`",
    ),
    "depthwise approx": (
        _depthwise_case(approx="kron"),
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
        _embedding_case(ids_dtype=tf.float32),
        r"`inputs` must hold integer ids; got dtype float32",
    ),
    "embedding dim": (
        _embedding_case(y_shape=(4, 3)),
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


# Shapes the original accepted (its own tests register them): a warning that
# names the problem, and the layer is registered.
WARNING_CASES = {
    "conv spatial (VALID)": (
        _conv_case(padding="VALID"),
        r"`outputs` has shape \(2, 4, 4, 5\); expected shape \[batch, 3, 3, 5\]",
    ),
    "conv spatial (strides)": (_conv_case(strides=(1, 2, 2, 1)), r"\[batch, 2, 2, 5\]"),
    "fc scalar params": (
        lambda lc: lc.register_fully_connected(
            tf.constant(1.0), tf.constant(2.0), tf.constant(3.0)
        ),
        r"`params` must have rank at least 2 .*got shape \(\)",
    ),
    "fc integer params": (
        lambda lc: lc.register_fully_connected(
            tf.constant(1), tf.constant(2), tf.constant(3)
        ),
        r"`params` Const:0 has dtype int32",
    ),
    "embedding rank-1 params": (
        lambda lc: lc.register_embedding_multi(
            tf.constant((1.0,)),
            (tf.constant(2), tf.constant(3)),
            (tf.constant(4.0), tf.constant(5.0)),
        ),
        r"`params` must have rank 2 .*got shape \(1,\)",
    ),
}


@pytest.mark.parametrize("case", sorted(WARNING_CASES))
def test_registration_validation_warnings(case):
    register, pattern = WARNING_CASES[case]
    lc = LayerCollection()
    with pytest.warns(lc_lib.RegistrationWarning, match=pattern) as record:
        register(lc)
    # Attributed to the register_* call in this file, not to the library.
    assert all(warning.filename == __file__ for warning in record)
    assert len(lc.fisher_blocks) == 1


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
