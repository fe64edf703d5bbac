"""Tests for the products of kfac.ops.estimator (`multiply_matpower`,
`multiply_inverse`, `multiply`) against numpy damped Kronecker powers, and the
damping given when the ops are made."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from estimator_helpers import BATCH
from estimator_helpers import CLASSES
from estimator_helpers import DAMPING
from estimator_helpers import FAN_IN
from estimator_helpers import damped_kronecker_factors
from estimator_helpers import damped_kronecker_power
from estimator_helpers import exact_output_factor
from estimator_helpers import make_estimator
from estimator_helpers import run_updates
from estimator_helpers import softmax_regression
from estimator_helpers import two_layer_model
from estimator_helpers import with_ones

from kfac.ops import layer_collection as lc_lib


def test_products_map_vectors_in_input_order():
    with tf.Graph().as_default():
        lc, (w1, b1, w2) = two_layer_model()
        est = make_estimator(lc, [w1, b1, w2])
        _, cov_update_op, _, inv_update_op, _, _ = est.make_ops_and_vars()
        rng = np.random.RandomState(2)
        vectors = {
            var.op.name: rng.randn(*var.shape.as_list()).astype(np.float32)
            for var in (w1, b1, w2)
        }
        order = [b1, w2, w1]  # scrambled, and the tuple key (w1, b1) split
        pairs = [(tf.constant(vectors[v.op.name]), v) for v in order]
        inverse_products = est.multiply_inverse(pairs)
        products = est.multiply(pairs)  # power 1 is available without registering
        for result in (inverse_products, products):
            assert [var for _, var in result] == order
        block1, block2 = list(est.blocks)
        with tf.Session() as sess:
            run_updates(sess, cov_update_op, inv_update_op)
            values, covs = sess.run(
                [
                    [
                        [vec for vec, _ in result]
                        for result in (inverse_products, products)
                    ],
                    [
                        block1._input_factor.get_cov(),
                        block1._output_factor.get_cov(),
                        block2._input_factor.get_cov(),
                        block2._output_factor.get_cov(),
                    ],
                ]
            )
    for exp, result_values in zip((-1, 1), values):
        got = dict(zip(["b1", "w2", "w1"], result_values))
        layer1 = damped_kronecker_power(
            covs[0], covs[1], np.vstack([vectors["w1"], vectors["b1"][None]]), exp
        )
        layer2 = damped_kronecker_power(covs[2], covs[3], vectors["w2"], exp)
        np.testing.assert_allclose(got["w1"], layer1[:-1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["b1"], layer1[-1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["w2"], layer2, rtol=1e-4, atol=1e-5)


def test_products_require_exactly_the_registered_variables():
    with tf.Graph().as_default():
        lc, (w1, b1, w2) = two_layer_model()
        stranger = tf.get_variable("stranger", [2])
        est = make_estimator(lc, [w1, b1, w2])
        pairs = [(tf.zeros_like(v), v) for v in (w1, b1, w2)]
        with pytest.raises(KeyError, match="b1"):
            est.multiply_inverse([pairs[0], pairs[2]])
        with pytest.raises(KeyError, match="stranger"):
            est.multiply_inverse(pairs + [(tf.zeros([2]), stranger)])
        with pytest.raises(ValueError, match="Power 2"):
            est.multiply_matpower(2, pairs)


def test_indexed_slices_pass_through_to_embedding_blocks():
    vocab, dim = 5, 2
    ids_np = np.array([0, 3, 3, 1, 0, 3], np.int32)
    with tf.Graph().as_default():
        rng = np.random.RandomState(3)
        table = tf.get_variable(
            "table", initializer=rng.randn(vocab, dim).astype(np.float32)
        )
        w = tf.get_variable("w", initializer=rng.randn(dim, CLASSES).astype(np.float32))
        ids = tf.constant(ids_np)
        embedded = tf.gather(table, ids)
        logits = tf.matmul(embedded, w)
        lc = lc_lib.LayerCollection()
        lc.register_embedding(table, ids, embedded)
        lc.register_fully_connected(w, embedded, logits)
        lc.register_categorical_predictive_distribution(logits)
        est = make_estimator(lc, [table, w], estimation_mode="exact")
        _, cov_update_op, _, inv_update_op, _, _ = est.make_ops_and_vars()
        sparse = tf.IndexedSlices(
            tf.constant(rng.randn(3, dim).astype(np.float32)),
            tf.constant([3, 0, 4]),
            tf.constant([vocab, dim]),
        )
        [(product, _), _] = est.multiply_inverse(
            [(sparse, table), (tf.zeros([dim, CLASSES]), w)]
        )
        assert isinstance(product, tf.IndexedSlices)
        block = lc.fisher_blocks[table]
        with tf.Session() as sess:
            run_updates(sess, cov_update_op, inv_update_op)
            values, indices, in_diag, out_cov, sparse_values = sess.run(
                [
                    product.values,
                    product.indices,
                    block._input_factor.get_cov_var(),
                    block._output_factor.get_cov(),
                    sparse.values,
                ]
            )
    counts = np.bincount(ids_np, minlength=vocab) / len(ids_np)
    np.testing.assert_allclose(np.ravel(in_diag), counts, atol=1e-6)
    pi = np.sqrt(counts.sum() * dim / (np.trace(out_cov) * vocab))
    rows = np.array([3, 0, 4])
    expected = (
        sparse_values
        / (counts[rows] + pi * np.sqrt(DAMPING))[:, None]
        @ np.linalg.inv(out_cov + np.sqrt(DAMPING) / pi * np.eye(dim))
    )
    np.testing.assert_array_equal(indices, rows)
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-5)


def _every_layer_kind():
    """A small model using every registration method; returns its collection."""
    rng = np.random.RandomState(0)

    def var(name, shape):
        return tf.get_variable(name, initializer=0.3 * rng.randn(*shape).astype("f"))

    batch = 4
    lc = lc_lib.LayerCollection()
    images = tf.constant(rng.randn(batch, 5, 5, 2).astype(np.float32))
    conv_w, conv_b = var("conv_w", [3, 3, 2, 3]), var("conv_b", [3])
    conv = tf.nn.conv2d(images, conv_w, [1, 1, 1, 1], "SAME") + conv_b
    lc.register_conv2d((conv_w, conv_b), [1, 1, 1, 1], "SAME", images, conv)
    hidden = tf.nn.relu(conv)
    diag_w = var("diag_w", [2, 2, 3, 3])
    strided = tf.nn.conv2d(hidden, diag_w, [1, 2, 2, 1], "VALID")
    lc.register_conv2d(
        diag_w, [1, 2, 2, 1], "VALID", hidden, strided, approx="diagonal"
    )
    depthwise, pointwise = (
        var("depthwise", [3, 3, 3, 2]),
        var("pointwise", [1, 1, 6, 2]),
    )
    mid = tf.nn.depthwise_conv2d(strided, depthwise, [1, 1, 1, 1], "SAME")
    separable = tf.nn.conv2d(mid, pointwise, [1, 1, 1, 1], "VALID")
    lc.register_separable_conv2d(
        depthwise, pointwise, strided, mid, separable, [1, 1, 1, 1], "SAME"
    )
    sequence = tf.reshape(separable, [batch, 4, 2])
    conv1d_w = var("conv1d_w", [2, 2, 3])
    conv1d = tf.nn.convolution(sequence, conv1d_w, "VALID")
    lc.register_convolution(conv1d_w, sequence, conv1d, "VALID")
    multi_w = var("multi_w", [1, 1, 3, 2])
    grid = tf.reshape(conv1d, [batch, 1, 3, 3])
    uses = [grid, 2.0 * grid]
    multi_out = [tf.nn.conv2d(x, multi_w, [1, 1, 1, 1], "SAME") for x in uses]
    lc.register_conv2d_multi(multi_w, [1, 1, 1, 1], "SAME", uses, multi_out)
    features = tf.reshape(tf.add_n(multi_out), [batch, 6])
    folded_w = var("folded_w", [6, 6])
    folded_in = tf.concat([features, tf.tanh(features)], 0)  # [2 uses * batch, 6]
    folded_out = tf.matmul(folded_in, folded_w)  # one read of folded_w
    lc.register_fully_connected_multi(folded_w, folded_in, folded_out, num_uses=2)
    summed = tf.reduce_sum(tf.reshape(folded_out, [2, batch, 6]), 0)
    series_w, series_b = var("series_w", [6, 6]), var("series_b", [6])
    steps = [summed, tf.tanh(summed)]
    series_out = [tf.matmul(x, series_w) + series_b for x in steps]
    lc.register_fully_connected_multi(
        (series_w, series_b), steps, series_out, approx="kron_series_2"
    )
    table, table2 = var("table", [7, 6]), var("table2", [7, 6])
    ids = tf.constant(rng.randint(7, size=batch))
    embedded = tf.gather(table, ids)
    lc.register_embedding(table, ids, embedded)
    ids2 = [tf.constant(rng.randint(7, size=batch)) for _ in range(2)]
    embedded2 = [tf.gather(table2, i) for i in ids2]
    lc.register_embedding_multi(table2, ids2, embedded2)
    top = tf.add_n(series_out + [embedded] + embedded2)
    out_w, out_b = var("out_w", [6, 3]), var("out_b", [3])
    logits = tf.matmul(top, out_w) + out_b
    lc.register_fully_connected((out_w, out_b), top, logits, approx="diagonal")
    scale, shift = var("scale", [3]), var("shift", [3])
    lc.register_generic(scale, batch)
    lc.register_generic(shift, batch, approx="diagonal")
    lc.register_categorical_predictive_distribution(logits * scale + shift)
    return lc, folded_w, multi_w


def test_every_registration_kind_builds_and_preconditions():
    # Also checks the use counts of list and folded *_multi registrations
    # against the graph (check_registration runs when ops are made).
    with tf.Graph().as_default():
        lc, folded_w, multi_w = _every_layer_kind()
        assert lc._get_use_count_map()[folded_w] == 1  # one folded tensor
        assert lc._get_use_count_map()[multi_w] == 2  # a list of two uses
        variables = list(lc.registered_variables)
        est = make_estimator(lc, variables, cov_ema_decay=0.5)
        _, cov_update_op, _, inv_update_op, _, _ = est.make_ops_and_vars()
        grads = tf.gradients(lc.total_sampled_loss(), variables)
        preconditioned = est.multiply_inverse(list(zip(grads, variables)))
        with tf.Session() as sess:
            run_updates(sess, cov_update_op, inv_update_op)
            values = sess.run([vec for vec, _ in preconditioned])
    assert len(lc.get_blocks()) == 13
    for value in values:
        value = getattr(value, "values", value)  # IndexedSlicesValue for tables
        assert np.all(np.isfinite(value)) and np.any(value != 0)


# --------------------------------------------------------------------------
# The damping given when the ops are made.


def _make_with_damping(est, make, damping):
    """`(cov_update_op, inv_update_op)` from the make method `make`."""
    if make == "make_ops_and_vars":
        _, cov_update_op, _, inv_update_op, _, _ = est.make_ops_and_vars(
            damping=damping
        )
        return cov_update_op, inv_update_op
    if make == "make_vars_and_create_op_thunks":
        cov_thunks, inv_thunks = est.make_vars_and_create_op_thunks(damping=damping)
    else:
        cov_vars, cov_thunks, inv_vars, inv_thunks = est.create_ops_and_vars_thunks(
            damping=damping
        )
        for thunk in cov_vars + inv_vars:
            thunk()
    return (
        tf.group([thunk() for thunk in cov_thunks]),
        tf.group([thunk() for thunk in inv_thunks]),
    )


def _numpy_inverses(x_np, probs, damping, mat2d):
    """`(A + π√λ I)⁻¹` and the damped Kronecker inverse of `mat2d` (numpy)."""
    input_cov = with_ones(x_np).T @ with_ones(x_np) / BATCH
    output_cov = exact_output_factor(probs)
    damped_input, _ = damped_kronecker_factors(input_cov, output_cov, damping)
    input_inverse = np.linalg.inv(damped_input)
    product = damped_kronecker_power(input_cov, output_cov, mat2d, -1, damping)
    return input_inverse, product


@pytest.mark.parametrize(
    "make",
    [
        "make_ops_and_vars",
        "make_vars_and_create_op_thunks",
        "create_ops_and_vars_thunks",
    ],
)
def test_damping_given_when_ops_are_made_reaches_the_inverses(make, tf_behavior):
    given = 0.7
    rng = np.random.RandomState(4)
    mat2d = rng.randn(FAN_IN + 1, CLASSES).astype(np.float32)
    with tf.Graph().as_default():
        lc, (w, b), x_np, probs = softmax_regression()
        est = make_estimator(lc, (w, b), estimation_mode="exact")
        assert est.damping == DAMPING
        cov_update_op, inv_update_op = _make_with_damping(est, make, given)
        assert est.damping == given
        [product_w, product_b] = [
            vec
            for vec, _ in est.multiply_inverse(
                [(tf.constant(mat2d[:-1]), w), (tf.constant(mat2d[-1]), b)]
            )
        ]
        [block] = list(est.blocks)
        [input_inverse] = list(
            block._input_factor._matpower_by_exp_and_damping.values()
        )
        with tf.Session() as sess:
            run_updates(sess, cov_update_op, inv_update_op)
            got_inverse, got_w, got_b = sess.run([input_inverse, product_w, product_b])
    want_inverse, want_product = _numpy_inverses(x_np, probs, given, mat2d)
    _, constructor_product = _numpy_inverses(x_np, probs, DAMPING, mat2d)
    assert not np.allclose(want_product, constructor_product, rtol=1e-2)
    np.testing.assert_allclose(got_inverse, want_inverse, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_w, want_product[:-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_b, want_product[-1], rtol=1e-4, atol=1e-5)


def test_no_damping_given_means_the_constructor_damping(tf_behavior):
    with tf.Graph().as_default():
        lc, (w, b), x_np, probs = softmax_regression()
        est = make_estimator(lc, (w, b), estimation_mode="exact")
        cov_update_op, inv_update_op = _make_with_damping(
            est, "make_ops_and_vars", None
        )
        assert est.damping == DAMPING
        [block] = list(est.blocks)
        [input_inverse] = list(
            block._input_factor._matpower_by_exp_and_damping.values()
        )
        with tf.Session() as sess:
            run_updates(sess, cov_update_op, inv_update_op)
            got_inverse = sess.run(input_inverse)
    want_inverse, _ = _numpy_inverses(
        x_np, probs, DAMPING, np.zeros([FAN_IN + 1, CLASSES])
    )
    np.testing.assert_allclose(got_inverse, want_inverse, rtol=1e-4, atol=1e-5)


def test_damping_variable_is_read_by_every_inverse_update(tf_behavior):
    rng = np.random.RandomState(5)
    mat2d = rng.randn(FAN_IN + 1, CLASSES).astype(np.float32)
    with tf.Graph().as_default():
        lc, (w, b), x_np, probs = softmax_regression()
        damping = tf.get_variable("damping", initializer=0.05, trainable=False)
        est = make_estimator(lc, (w, b), estimation_mode="exact")
        cov_update_op, inv_update_op = _make_with_damping(
            est, "make_vars_and_create_op_thunks", damping
        )
        assert est.damping is damping
        products = [
            vec
            for vec, _ in est.multiply_inverse(
                [(tf.constant(mat2d[:-1]), w), (tf.constant(mat2d[-1]), b)]
            )
        ]
        with tf.Session() as sess:
            run_updates(sess, cov_update_op, inv_update_op)
            before = sess.run(products)
            sess.run(tf.assign(damping, 0.9))
            sess.run(inv_update_op)
            after = sess.run(products)
    for got, value in ((before, 0.05), (after, 0.9)):
        _, want = _numpy_inverses(x_np, probs, value, mat2d)
        np.testing.assert_allclose(got[0], want[:-1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[1], want[-1], rtol=1e-4, atol=1e-5)
