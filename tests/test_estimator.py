"""Tests for kfac.ops.estimator (API.md §7), checked against numpy Fisher factors."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac.ops import estimator
from kfac.ops import fisher_factors as ff
from kfac.ops import layer_collection as lc_lib

BATCH, FAN_IN, CLASSES = 6, 3, 4
DAMPING = 0.1


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _with_ones(x):
    return np.concatenate([x, np.ones([x.shape[0], 1])], axis=1)


def _exact_output_factor(probs):
    """(1/B) Σ_b (diag(p_b) − p_b p_bᵀ): the per-example softmax Fisher, averaged."""
    return np.mean([np.diag(p) - np.outer(p, p) for p in probs], axis=0)


def _data(seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(BATCH, FAN_IN).astype(np.float32)
    w = rng.randn(FAN_IN, CLASSES).astype(np.float32)
    b = rng.randn(CLASSES).astype(np.float32)
    labels = rng.randint(CLASSES, size=BATCH).astype(np.int32)
    return x, w, b, labels


def _softmax_regression(towers=1):
    """Registers `logits = x W + b` (split in `towers` towers) and its softmax loss."""
    x_np, w_np, b_np, labels = _data()
    w = tf.get_variable("w", initializer=w_np)
    b = tf.get_variable("b", initializer=b_np)
    lc = lc_lib.LayerCollection()
    rows = BATCH // towers
    for tower in range(towers):
        with tf.variable_scope("tower", reuse=tower > 0):
            x = tf.constant(x_np[tower * rows : (tower + 1) * rows])
            logits = tf.matmul(x, w) + b
            lc.register_fully_connected((w, b), x, logits)
            lc.register_categorical_predictive_distribution(
                logits,
                targets=tf.constant(labels[tower * rows : (tower + 1) * rows]),
                name="logits",
            )
    return lc, (w, b), x_np, _softmax(x_np @ w_np + b_np)


def _estimator(lc, variables, **kwargs):
    kwargs.setdefault("cov_ema_decay", 0.0)  # one update sets cov to the estimate
    kwargs.setdefault("damping", DAMPING)
    return estimator.make_fisher_estimator(
        variables=list(variables), layer_collection=lc, **kwargs
    )


def _run_updates(sess, cov_update_op, inv_update_op):
    sess.run(tf.global_variables_initializer())
    sess.run(cov_update_op)
    sess.run(inv_update_op)


# --------------------------------------------------------------------------
# Estimation modes.


@pytest.mark.parametrize("mode", ["gradients", "empirical", "curvature_prop", "exact"])
def test_estimation_modes_produce_finite_factors(mode, tf_behavior):
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        lc, params, x_np, probs = _softmax_regression()
        est = _estimator(lc, params, estimation_mode=mode)
        _, cov_update_op, _, inv_update_op, _, _ = est.make_ops_and_vars()
        [block] = list(est.blocks)
        with tf.Session() as sess:
            _run_updates(sess, cov_update_op, inv_update_op)
            input_cov, output_cov = sess.run(
                [block._input_factor.get_cov(), block._output_factor.get_cov()]
            )
    # The input factor does not depend on the gradient signal.
    x1 = _with_ones(x_np)
    np.testing.assert_allclose(input_cov, x1.T @ x1 / BATCH, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(output_cov))
    np.testing.assert_allclose(output_cov, output_cov.T, atol=1e-6)
    assert np.linalg.eigvalsh(output_cov).min() > -1e-6
    if mode == "exact":
        np.testing.assert_allclose(
            output_cov, _exact_output_factor(probs), rtol=1e-5, atol=1e-6
        )
    if mode == "empirical":
        # Data targets: G = (1/B) Σ_b (p_b − y_b)(p_b − y_b)ᵀ.
        residual = probs - np.eye(CLASSES)[_data()[3]]
        np.testing.assert_allclose(
            output_cov, residual.T @ residual / BATCH, rtol=1e-5, atol=1e-6
        )


def test_unknown_estimation_mode_is_reported_when_ops_are_made():
    with tf.Graph().as_default():
        lc, params, _, _ = _softmax_regression()
        est = _estimator(lc, params, estimation_mode="bogus")  # not checked yet
        with pytest.raises(
            ValueError,
            match=r"'bogus'.*'gradients', 'empirical', "
            r"'curvature_prop', 'exact'",
        ):
            est.make_ops_and_vars()


def test_registration_problems_are_reported_when_ops_are_made():
    with tf.Graph().as_default():
        lc, params, _, _ = _softmax_regression()
        est = _estimator(lc, params[:1])  # the bias is registered but not listed
        with pytest.raises(ValueError, match="b:0"):
            est.make_vars_and_create_op_thunks()
        empty = _estimator(lc_lib.LayerCollection(), [])
        with pytest.raises(ValueError, match="at least one registered loss"):
            empty.create_ops_and_vars_thunks()


def test_one_tuple_params_and_variable_lists():
    # The setup of the original estimator tests: weights registered as `(w,)`
    # (a sequence, hence "with bias"), the bias used but not registered.
    with tf.Graph().as_default():
        lc = lc_lib.LayerCollection()
        inputs = tf.random_normal((2, 2))
        w = tf.get_variable("w", shape=(2, 2))
        b = tf.get_variable("b", initializer=tf.zeros_initializer(), shape=(2, 1))
        output = tf.matmul(inputs, w) + b
        lc.register_fully_connected(params=(w,), inputs=inputs, outputs=output)
        lc.register_categorical_predictive_distribution(
            logits=tf.tanh(output), targets=tf.zeros_like(output)
        )
        for variables, fragment in (
            ([w, b], "b:0 is not registered"),
            ([], "not included in the list: w:0"),
        ):
            with pytest.raises(ValueError, match=fragment):
                _estimator(lc, variables).make_ops_and_vars()
        est = _estimator(lc, [w])
        est.make_ops_and_vars()
        [block] = list(est.blocks)
        assert block._input_factor.get_cov_var().shape.as_list() == [3, 3]


def test_make_fisher_estimator_and_properties():
    with tf.Graph().as_default():
        lc, params, _, _ = _softmax_regression()
        est = _estimator(lc, params, name="est")
        assert isinstance(est, estimator.FisherEstimatorRoundRobin)
        assert isinstance(est, estimator.FisherEstimator)
        assert est.variables == list(params) and est.damping == DAMPING
        assert est.name == "est" and not est.made_vars()
        assert list(est.blocks) == list(lc.get_blocks())
        assert len(est.factors) == 0  # factors appear when ops are made
        est.make_ops_and_vars()
        assert est.made_vars() and len(est.factors) == 2
        round_robin = estimator.make_fisher_estimator(
            "round_robin",
            variables=list(params),
            cov_ema_decay=0.9,
            damping=1.0,
            layer_collection=lc,
        )
        assert isinstance(round_robin, estimator.FisherEstimatorRoundRobin)
        with pytest.raises(ValueError, match="'replica'"):
            estimator.make_fisher_estimator(
                "replica",
                variables=[],
                cov_ema_decay=0.9,
                damping=1.0,
                layer_collection=lc,
            )


@pytest.mark.parametrize(
    "first,second",
    [
        ("make_ops_and_vars", "make_ops_and_vars"),
        ("make_vars_and_create_op_thunks", "make_ops_and_vars"),
        ("create_ops_and_vars_thunks", "make_vars_and_create_op_thunks"),
    ],
)
def test_already_made_variables(first, second):
    with tf.Graph().as_default():
        lc, params, _, _ = _softmax_regression()
        est = _estimator(lc, params)
        getattr(est, first)()
        with pytest.raises(
            estimator.VariablesAlreadyMadeError, match="Already made variables."
        ) as error:
            getattr(est, second)()
        assert isinstance(error.value, ValueError)
        assert isinstance(error.value, RuntimeError)


def test_variable_names_and_scope():
    with tf.Graph().as_default():
        lc, params, _, _ = _softmax_regression()
        est = _estimator(lc, params)
        est.make_ops_and_vars(scope="my_scope")
        [block] = list(est.blocks)
        cov = block._input_factor.get_cov_var()
        assert cov.name.startswith("my_scope/") and cov.name.endswith("/cov:0")
        inverses = list(block._input_factor._matpower_by_exp_and_damping.values())
        assert len(inverses) == 1
        assert inverses[0].name.startswith("my_scope/")
        assert "matpower_exp-1_damp" in inverses[0].name
        default = _estimator(lc_lib.LayerCollection(), [])
        assert default.name == "FisherEstimator"


def test_thunks_can_be_called_repeatedly_inside_cond(tf_behavior):
    with tf.Graph().as_default():
        lc, params, x_np, probs = _softmax_regression()
        est = _estimator(lc, params, estimation_mode="exact", cov_ema_decay=0.5)
        cov_thunks, inv_thunks = est.make_vars_and_create_op_thunks()
        flag = tf.placeholder(tf.bool, [])

        def run_all(thunks):
            ops = [thunk() for thunk in thunks]
            with tf.control_dependencies(ops):
                return tf.constant(True)

        cov_update = tf.cond(
            flag, lambda: run_all(cov_thunks), lambda: tf.constant(False)
        )
        inv_update = tf.cond(
            flag, lambda: run_all(inv_thunks), lambda: tf.constant(False)
        )
        direct = [thunk() for thunk in cov_thunks]  # a second call builds new ops
        [block] = list(est.blocks)
        output_factor = block._output_factor
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(cov_update, {flag: False})
            np.testing.assert_allclose(
                sess.run(output_factor.get_cov()), np.eye(CLASSES)
            )
            sess.run(cov_update, {flag: True})
            sess.run(direct)
            sess.run(inv_update, {flag: True})
            cov, inverse = sess.run(
                [
                    output_factor.get_cov(),
                    list(output_factor._matpower_by_exp_and_damping.values())[0],
                ]
            )
    exact = _exact_output_factor(probs)
    # Two EMA steps with decay 0.5 from the identity.
    np.testing.assert_allclose(cov, 0.25 * np.eye(CLASSES) + 0.75 * exact, atol=1e-5)
    assert not np.allclose(inverse, np.eye(CLASSES))


# --------------------------------------------------------------------------
# Towers.


@pytest.fixture
def tower_strategy():
    def set_strategy(strategy):
        ff.set_global_constants(tower_strategy=strategy)

    yield set_strategy
    ff.set_global_constants(tower_strategy="concat")


@pytest.mark.parametrize("strategy", ["concat", "separate"])
def test_two_towers_equal_one_tower_on_the_whole_batch(
    strategy, tower_strategy, tf_behavior
):
    tower_strategy(strategy)
    with tf.Graph().as_default():
        lc, params, x_np, probs = _softmax_regression(towers=2)
        [block] = list(lc.get_blocks())
        assert block.num_registered_towers == 2 and len(lc.towers_by_loss[0]) == 2
        est = _estimator(lc, params, estimation_mode="exact")
        _, cov_update_op, _, inv_update_op, _, _ = est.make_ops_and_vars()
        with tf.Session() as sess:
            _run_updates(sess, cov_update_op, inv_update_op)
            input_cov, output_cov = sess.run(
                [block._input_factor.get_cov(), block._output_factor.get_cov()]
            )
    x1 = _with_ones(x_np)
    np.testing.assert_allclose(input_cov, x1.T @ x1 / BATCH, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        output_cov, _exact_output_factor(probs), rtol=1e-5, atol=1e-6
    )


# --------------------------------------------------------------------------
# Products.


def _two_layer_model():
    rng = np.random.RandomState(1)
    x = tf.constant(rng.randn(BATCH, FAN_IN).astype(np.float32))
    w1 = tf.get_variable("w1", initializer=rng.randn(FAN_IN, 5).astype(np.float32))
    b1 = tf.get_variable("b1", initializer=rng.randn(5).astype(np.float32))
    w2 = tf.get_variable("w2", initializer=rng.randn(5, CLASSES).astype(np.float32))
    pre1 = tf.matmul(x, w1) + b1
    hidden = tf.tanh(pre1)
    logits = tf.matmul(hidden, w2)
    lc = lc_lib.LayerCollection()
    lc.register_fully_connected((w1, b1), x, pre1)
    lc.register_fully_connected(w2, hidden, logits)
    lc.register_categorical_predictive_distribution(logits)
    return lc, (w1, b1, w2)


def _damped_kronecker_power(input_cov, output_cov, mat2d, exp, damping=DAMPING):
    """(A + π√d I)^exp X (G + √d/π I)^exp with π the trace-norm ratio (numpy)."""
    pi = np.sqrt(
        np.trace(input_cov)
        * output_cov.shape[0]
        / (np.trace(output_cov) * input_cov.shape[0])
    )
    left = input_cov + pi * np.sqrt(damping) * np.eye(input_cov.shape[0])
    right = output_cov + np.sqrt(damping) / pi * np.eye(output_cov.shape[0])
    if exp == -1:
        return np.linalg.solve(left, mat2d) @ np.linalg.inv(right)
    return left @ mat2d @ right


def test_products_map_vectors_in_input_order():
    with tf.Graph().as_default():
        lc, (w1, b1, w2) = _two_layer_model()
        est = _estimator(lc, [w1, b1, w2])
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
            _run_updates(sess, cov_update_op, inv_update_op)
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
        layer1 = _damped_kronecker_power(
            covs[0], covs[1], np.vstack([vectors["w1"], vectors["b1"][None]]), exp
        )
        layer2 = _damped_kronecker_power(covs[2], covs[3], vectors["w2"], exp)
        np.testing.assert_allclose(got["w1"], layer1[:-1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["b1"], layer1[-1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["w2"], layer2, rtol=1e-4, atol=1e-5)


def test_products_require_exactly_the_registered_variables():
    with tf.Graph().as_default():
        lc, (w1, b1, w2) = _two_layer_model()
        stranger = tf.get_variable("stranger", [2])
        est = _estimator(lc, [w1, b1, w2])
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
        est = _estimator(lc, [table, w], estimation_mode="exact")
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
            _run_updates(sess, cov_update_op, inv_update_op)
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
        est = _estimator(lc, variables, cov_ema_decay=0.5)
        _, cov_update_op, _, inv_update_op, _, _ = est.make_ops_and_vars()
        grads = tf.gradients(lc.total_sampled_loss(), variables)
        preconditioned = est.multiply_inverse(list(zip(grads, variables)))
        with tf.Session() as sess:
            _run_updates(sess, cov_update_op, inv_update_op)
            values = sess.run([vec for vec, _ in preconditioned])
    assert len(lc.get_blocks()) == 13
    for value in values:
        value = getattr(value, "values", value)  # IndexedSlicesValue for tables
        assert np.all(np.isfinite(value)) and np.any(value != 0)
