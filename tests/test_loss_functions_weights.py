"""Per-case weights on the losses (issue #17): `L = −Σ_b v_b log p(y_b | z_b)`.

The Fisher products scale case `b` by `v_b`, the factor products by `√v_b`
(`B Bᵀ = v·F`), and the sampled / empirical-Fisher losses by `√v_b`. Checked
against the numpy references of loss_function_references.py, against repeated
and removed cases, and through the estimator's four estimation modes.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from loss_function_references import ALL
from loss_function_references import NATURAL
from loss_function_references import SPECS
from loss_function_references import fisher_from_outcomes
from loss_function_references import log_softmax
from loss_function_references import run
from tolerances import assert_close

import kfac
from kfac.ops import layer_collection as lc_lib

SEED = 1234


def _cases(spec):
    """Four distinct cases `(params [4, P], targets [4, ...])`: the spec's two
    rows and two more (variances stay positive)."""
    params = np.concatenate([spec.flat_params, 0.5 * spec.flat_params[::-1] + 0.1])
    targets = np.concatenate([spec.targets, spec.targets[::-1]])
    return params, targets


def _loss(spec, rows, weights=None, seed=None):
    """The loss of `spec` on cases `rows` of `_cases(spec)`, with data targets."""
    params, targets = _cases(spec)
    return spec.make(
        tf.constant(params[rows]), targets=targets[rows], seed=seed, weights=weights
    )


def _nll(spec, rows):
    """Per-case −log p(y_b | z_b) (numpy)."""
    params, targets = _cases(spec)
    return np.array([-spec.log_prob(params[r], targets[r]) for r in rows])


def _fisher(spec, rows):
    """Per-case unweighted Fisher `F_b` (numpy, `[len(rows), P, P]`)."""
    params, _ = _cases(spec)
    return np.array(
        [
            fisher_from_outcomes(spec.log_prob, params[r], spec.outcomes(params[r]))
            for r in rows
        ]
    )


def _products(spec, loss, vector):
    """Every product of `loss` with `vector` (`[B, P]`), evaluated, flattened to
    `[B, P]` per case; "columns" is the dense factor `[B, P, P]` built from the
    replicated one-hot columns. Hessian products for natural parameters."""
    size = vector.shape[1]
    kinds = ["fisher"] + (["hessian"] if spec.name in NATURAL else [])
    fetches = {"evaluate": loss.evaluate()}
    for kind in kinds:
        fetches[kind] = getattr(loss, "multiply_" + kind)(spec.to_inputs(vector))
        factor = "multiply_{}_factor".format(kind)
        fetches[kind + "_factor"] = getattr(loss, factor)(vector)
        fetches[kind + "_factor_transpose"] = getattr(loss, factor + "_transpose")(
            spec.to_inputs(vector)
        )
        fetches[kind + "_columns"] = [
            getattr(loss, factor + "_replicated_one_hot")((j,)) for j in range(size)
        ]
    values = run(fetches)
    for kind in kinds:
        values[kind] = spec.from_inputs(values[kind])
        values[kind + "_factor"] = spec.from_inputs(values[kind + "_factor"])
        values[kind + "_columns"] = np.stack(
            [spec.from_inputs(column) for column in values[kind + "_columns"]], axis=-1
        )
    return values


def _per_case(values):
    return {key: value for key, value in values.items() if key != "evaluate"}


# ---------------------------------------------------------------------------
# Weighted losses against repeated and removed cases and numpy.


@pytest.mark.parametrize("name", ALL)
def test_weight_two_is_the_case_repeated_twice(name, graph):
    spec = SPECS[name]
    weights = np.array([2.0, 1.0, 1.0])
    vector = np.random.RandomState(3).randn(3, spec.flat_params.shape[1])
    weighted = _products(spec, _loss(spec, [0, 1, 2], weights), vector)
    repeated = _products(spec, _loss(spec, [0, 0, 1, 2]), vector[[0, 0, 1, 2]])
    np.testing.assert_allclose(weighted["evaluate"], repeated["evaluate"], rtol=1e-12)
    np.testing.assert_allclose(
        weighted["evaluate"], weights @ _nll(spec, [0, 1, 2]), rtol=1e-10
    )
    summed = np.concatenate(
        [repeated["fisher"][:1] + repeated["fisher"][1:2], repeated["fisher"][2:]]
    )
    np.testing.assert_allclose(weighted["fisher"], summed, rtol=1e-12, atol=1e-14)
    # The dense per-case factor: B_b B_bᵀ = v_b F_b, and every factor product
    # (and the Hessian ones for natural parameters) uses that same B.
    fishers = _fisher(spec, [0, 1, 2])
    for kind in ["fisher"] + (["hessian"] if name in NATURAL else []):
        dense = weighted[kind + "_columns"]
        for b in range(3):
            assert_close(dense[b] @ dense[b].T, weights[b] * fishers[b], rtol=1e-6)
            assert_close(weighted[kind][b], weights[b] * fishers[b] @ vector[b], 1e-6)
        np.testing.assert_allclose(
            weighted[kind + "_factor"], np.einsum("bij,bj->bi", dense, vector)
        )
        np.testing.assert_allclose(
            weighted[kind + "_factor_transpose"], np.einsum("bji,bj->bi", dense, vector)
        )


@pytest.mark.parametrize("name", ALL)
def test_zero_weight_removes_the_case(name, graph):
    spec = SPECS[name]
    vector = np.random.RandomState(4).randn(3, spec.flat_params.shape[1])
    weighted = _products(spec, _loss(spec, [0, 1, 2], [1.0, 0.0, 1.0]), vector)
    without = _products(spec, _loss(spec, [0, 2]), vector[[0, 2]])
    np.testing.assert_allclose(weighted["evaluate"], without["evaluate"], rtol=1e-12)
    for key, value in _per_case(weighted).items():
        np.testing.assert_allclose(value[[0, 2]], without[key], rtol=1e-12, err_msg=key)
        np.testing.assert_array_equal(value[1], 0.0, err_msg=key)


@pytest.mark.parametrize("name", ALL)
def test_bool_mask_equals_zero_one_weights(name, graph):
    spec = SPECS[name]
    vector = np.random.RandomState(5).randn(3, spec.flat_params.shape[1])
    mask = np.array([True, False, True])
    masked = _products(spec, _loss(spec, [0, 1, 2], mask), vector)
    masked_tensor = _products(spec, _loss(spec, [0, 1, 2], tf.constant(mask)), vector)
    weighted = _products(spec, _loss(spec, [0, 1, 2], mask.astype(float)), vector)
    for values in (masked, masked_tensor):
        for key, value in values.items():
            np.testing.assert_array_equal(value, weighted[key], err_msg=key)


@pytest.mark.parametrize("name", sorted(set(ALL) - {"normal_mean_variance"}))
def test_batch_weights_broadcast_over_positions(name, graph):
    # [batch] weights on [batch, T, C] inputs weigh every position of a row.
    spec = SPECS[name]
    params, targets = _cases(spec)
    size = params.shape[1]
    params3 = tf.constant(params.reshape(2, 2, size))
    targets3 = targets.reshape((2, 2) + targets.shape[1:])
    weights = np.array([2.0, 0.5])
    per_position = np.repeat(weights[:, None], 2, axis=1)
    vector = np.random.RandomState(6).randn(2, 2, size)
    losses = [
        spec.make(params3, targets=targets3, weights=w)
        for w in (weights, per_position, None)
    ]
    fetches = [
        (
            loss.evaluate(),
            loss.multiply_fisher(vector),
            loss.multiply_fisher_factor(vector),
        )
        for loss in losses
    ]
    by_row, by_position, unweighted = run(fetches)
    nll = _nll(spec, range(4)).reshape(2, 2)
    np.testing.assert_allclose(by_row[0], np.sum(weights[:, None] * nll), rtol=1e-10)
    for got, want in zip(by_row, by_position):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(by_row[1], weights[:, None, None] * unweighted[1])
    np.testing.assert_allclose(
        by_row[2], np.sqrt(weights)[:, None, None] * unweighted[2]
    )


def test_registration_broadcasts_batch_weights_to_every_position(graph):
    logits = tf.constant(np.zeros((2, 3, 4)))
    lc = lc_lib.LayerCollection()
    lc.register_categorical_predictive_distribution(logits, weights=[1.0, 0.0])
    lc.register_categorical_predictive_distribution(logits)
    weighted, unweighted = lc.losses
    assert unweighted.weights is None
    assert weighted.weights.dtype == tf.float64
    assert weighted.weights.shape.as_list() == [2, 3]
    np.testing.assert_array_equal(run(weighted.weights), [[1, 1, 1], [0, 0, 0]])


# ---------------------------------------------------------------------------
# √v in the losses whose per-case gradients K-FAC takes outer products of.


@pytest.mark.parametrize("name", ALL)
def test_sampled_loss_gradient_is_sqrt_weight_times_the_unweighted_one(
    name, tf_behavior
):
    spec = SPECS[name]
    weights = np.array([2.0, 0.0, 0.5])
    params, targets = _cases(spec)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        inputs = tf.constant(params[:3])
        weighted = spec.make(inputs, targets=targets[:3], seed=SEED, weights=weights)
        unweighted = spec.make(inputs, targets=targets[:3], seed=SEED)
        # The same op seed in one graph: both draw the same targets.
        losses = [
            weighted.evaluate_on_sample(),
            unweighted.evaluate_on_sample(),
            weighted.evaluate_for_empirical_fisher(),
            unweighted.evaluate(),
        ]
        grads = [tf.gradients(loss, inputs)[0] for loss in losses]
        with tf.Session() as sess:
            values, grads = sess.run([losses, grads])
    sampled, sampled_ref, empirical, empirical_ref = grads
    assert np.abs(sampled_ref).max() > 1e-3
    scale = np.sqrt(weights)[:, None]
    np.testing.assert_allclose(sampled, scale * sampled_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(empirical, scale * empirical_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        values[2], np.sqrt(weights) @ _nll(spec, range(3)), rtol=1e-10
    )


@pytest.mark.parametrize("name", ALL)
def test_unweighted_empirical_fisher_loss_is_evaluate(name, graph):
    spec = SPECS[name]
    loss = _loss(spec, [0, 1])
    assert loss.weights is None
    values = run([loss.evaluate_for_empirical_fisher(), loss.evaluate()])
    assert values[0] == values[1]


def test_layer_collection_evaluates_the_empirical_fisher_losses(graph):
    logits = tf.constant(SPECS["categorical"].flat_params)
    targets = SPECS["categorical"].targets
    weights = np.array([4.0, 0.25])
    lc = lc_lib.LayerCollection()
    lc.register_categorical_predictive_distribution(logits, targets=targets)
    lc.register_categorical_predictive_distribution(
        logits, targets=targets, weights=weights
    )
    empirical, plain = run([lc.eval_losses_for_empirical_fisher(), lc.eval_losses()])
    nll = -log_softmax(SPECS["categorical"].flat_params)[[0, 1], targets]
    np.testing.assert_allclose(empirical, [nll.sum(), np.sqrt(weights) @ nll])
    np.testing.assert_allclose(plain, [nll.sum(), weights @ nll])


# ---------------------------------------------------------------------------
# Without weights nothing changes.


def _unweighted_reference_ops(spec, loss, vector):
    """The ops the losses built before weights existed: the unweighted hooks and
    `−Σ log p` at the (stopped) data targets."""
    targets = tf.stop_gradient(loss.targets)
    ops = [-tf.reduce_sum(loss.dist.log_prob(targets))]
    ops.append(loss._multiply_fisher_unweighted(spec.to_inputs(vector)))
    ops.append(loss._multiply_fisher_factor_unweighted(vector))
    ops.append(loss._multiply_fisher_factor_transpose_unweighted(spec.to_inputs(vector)))
    ops.append(loss._multiply_fisher_factor_replicated_one_hot_unweighted((1,)))
    return ops


def _public_ops(spec, loss, vector):
    return [
        loss.evaluate(),
        loss.multiply_fisher(spec.to_inputs(vector)),
        loss.multiply_fisher_factor(vector),
        loss.multiply_fisher_factor_transpose(spec.to_inputs(vector)),
        loss.multiply_fisher_factor_replicated_one_hot((1,)),
    ]


@pytest.mark.parametrize("name", ALL)
def test_unweighted_losses_build_exactly_the_unweighted_ops(name):
    spec = SPECS[name]
    vector = np.ones_like(spec.flat_params)
    graphs, values = [], []
    for build in (_public_ops, _unweighted_reference_ops):
        with tf.Graph().as_default() as graph:
            loss = spec.make(targets=spec.targets)
            values.append(run(build(spec, loss, vector)))
        graphs.append(graph.as_graph_def())
    assert len(graphs[0].node) == len(graphs[1].node)
    assert graphs[0] == graphs[1]
    for public, reference in zip(*map(tf.nest.flatten, values)):
        np.testing.assert_array_equal(public, reference)


# ---------------------------------------------------------------------------
# The estimator's modes estimate the Fisher of the weighted loss.

_BATCH, _FAN_IN, _CLASSES = 5, 3, 4
_WEIGHTS = np.array([1.0, 0.0, 2.0, 0.5, 1.0])


def _softmax(logits):
    return np.exp(log_softmax(logits))


def _weighted_output_factor(per_case_vectors):
    """`G = (1/N) Σ_b v_b s_b s_bᵀ` over the cases with `v_b > 0` only."""
    kept = np.flatnonzero(_WEIGHTS)
    return sum(
        _WEIGHTS[b] * np.outer(per_case_vectors[b], per_case_vectors[b]) for b in kept
    ) / _BATCH


@pytest.mark.parametrize("mode", ["exact", "empirical", "gradients", "curvature_prop"])
def test_estimator_output_factor_is_the_weighted_fisher(mode, tf_behavior):
    rng = np.random.RandomState(7)
    x_np = rng.randn(_BATCH, _FAN_IN)
    w_np = rng.randn(_FAN_IN, _CLASSES)
    labels = rng.randint(_CLASSES, size=_BATCH)
    with tf.Graph().as_default() as graph:
        tf.set_random_seed(0)
        x = tf.constant(x_np)
        w = tf.get_variable("w", initializer=w_np)
        logits = tf.matmul(x, w)
        lc = lc_lib.LayerCollection()
        lc.register_fully_connected(w, x, logits)
        lc.register_categorical_predictive_distribution(
            logits, seed=SEED, targets=labels, weights=_WEIGHTS
        )
        est = kfac.estimator.FisherEstimatorRoundRobin(
            variables=[w],
            cov_ema_decay=0.0,
            damping=0.1,
            layer_collection=lc,
            estimation_mode=mode,
        )
        _, cov_update_op, _, _, _, _ = est.make_ops_and_vars()
        [block] = list(est.blocks)
        # The random draws of this update, fetched in the same run.
        if mode == "gradients":
            draws = lc.losses[0].sample(SEED)  # the estimator's op seed
        elif mode == "curvature_prop":
            [signs] = [
                op for op in graph.get_operations() if op.type == "RandomUniformInt"
            ]
            draws = 2 * signs.outputs[0] - 1
        else:
            draws = tf.constant(0)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            _, drawn = sess.run([cov_update_op, draws])
            output_cov = sess.run(block._output_factor.get_cov())
    probs = _softmax(x_np @ w_np)
    if mode == "exact":
        fishers = [np.diag(p) - np.outer(p, p) for p in probs]
        kept = np.flatnonzero(_WEIGHTS)
        expected = sum(_WEIGHTS[b] * fishers[b] for b in kept) / _BATCH
    elif mode == "empirical":
        expected = _weighted_output_factor(probs - np.eye(_CLASSES)[labels])
    elif mode == "gradients":
        expected = _weighted_output_factor(probs - np.eye(_CLASSES)[drawn])
    else:
        sqrt_probs = np.sqrt(probs)
        factor_times_signs = sqrt_probs * drawn - probs * np.sum(
            sqrt_probs * drawn, axis=1, keepdims=True
        )
        expected = _weighted_output_factor(factor_times_signs)
    np.testing.assert_allclose(output_cov, expected, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------
# Errors at registration and at run time.

_REGISTRATIONS = [
    ("register_categorical_predictive_distribution", "logits"),
    ("register_normal_predictive_distribution", "mean"),
    ("register_multi_bernoulli_predictive_distribution", "logits"),
]


@pytest.mark.parametrize("method, data_name", _REGISTRATIONS)
@pytest.mark.parametrize(
    "weights, message",
    [
        (np.array([1.0, -0.5, 1.0]), "non-negative"),
        (np.array([1.0, np.nan, 1.0]), "NaN or infinite"),
        (np.ones(4), r"shape \(4,\)"),
        (np.ones((3, 2)), r"shape \(3, 2\)"),
    ],
)
def test_bad_constant_weights_are_rejected_at_registration(
    method, data_name, weights, message, graph
):
    lc = lc_lib.LayerCollection()
    with pytest.raises(ValueError, match=method + ".*`weights`.*" + message):
        getattr(lc, method)(tf.zeros([3, 2], tf.float64), weights=weights)
    assert not lc.losses


@pytest.mark.parametrize("method, data_name", _REGISTRATIONS)
def test_negative_fed_weights_fail_at_run_time(method, data_name, tf_behavior):
    with tf.Graph().as_default():
        weights = tf.placeholder(tf.float64, [None])
        data = tf.zeros([3, 2], tf.float64)
        lc = lc_lib.LayerCollection()
        getattr(lc, method)(data, weights=weights)
        [loss] = lc.losses
        fisher = loss.multiply_fisher(np.ones((3, 2)))
        with tf.Session() as sess:
            sess.run(fisher, {weights: [1.0, 0.0, 2.0]})
            with pytest.raises(tf.errors.InvalidArgumentError, match="`weights`"):
                sess.run(fisher, {weights: [1.0, -1.0, 2.0]})


def test_loss_rejects_weights_with_more_axes_than_the_cases(graph):
    with pytest.raises(ValueError, match="weights of shape"):
        SPECS["categorical"].make(weights=np.ones((2, 3)))
