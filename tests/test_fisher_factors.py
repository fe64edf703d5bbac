"""Tests of fisher_factors: moving averages and the dense / fully connected /
embedding factors, against numpy references (API.md §4). Naming and statistics
helpers: test_fisher_factors_naming.py; inverses: test_fisher_factors_inverses.py."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac.ops import fisher_factors as ff
from kfac.ops import utils


def _ema(init, estimates, decay):
    value = np.array(init, dtype=np.float64)
    for estimate in estimates:
        value = decay * value + (1.0 - decay) * estimate
    return value


def _run_two_updates(factor, placeholders, feeds, decay):
    """Instantiates `factor`, runs its cov update once per feed; returns the values."""
    factor.instantiate_cov_variables()
    update = factor.make_covariance_update_op(decay)
    results = []
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        initial = sess.run(factor.get_cov_var())
        for feed in feeds:
            results.append(sess.run(update, dict(zip(placeholders, feed))))
    return initial, results


def _fc_cov_reference(rows, has_bias):
    rows = np.asarray(rows, dtype=np.float64)
    if has_bias:
        rows = np.concatenate([rows, np.ones((rows.shape[0], 1))], axis=1)
    return sum(np.outer(row, row) for row in rows) / rows.shape[0]


# ---------------------------------------------------------- moving averages


def test_full_factor_anchor(graph, tf_behavior):
    factor = ff.FullFactor((tf.constant([1.0, 2.0]),), 2)
    factor.instantiate_cov_variables()
    assert factor.get_cov_var().name.startswith(factor.name + "/cov")
    update = factor.make_covariance_update_op(0.5)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        np.testing.assert_allclose(sess.run(update), [[0.75, 0.5], [0.5, 1.5]])
        np.testing.assert_allclose(
            sess.run(factor.get_cov()), [[0.75, 0.5], [0.5, 1.5]]
        )


def test_cov_var_created_lazily_and_once(graph):
    factor = ff.FullFactor((tf.constant([1.0, 2.0]),), 2)
    assert factor.get_cov_var() is None
    with tf.variable_scope("LayerCollection"):
        factor.instantiate_cov_variables()
    cov = factor.get_cov_var()
    assert cov.op.name == "LayerCollection/%s/cov" % factor.name
    assert cov not in tf.trainable_variables()
    with pytest.raises(AssertionError):
        factor.instantiate_cov_variables()


def test_zero_debiased_moving_average(graph, tf_behavior):
    ff.set_global_constants(zero_debias=True)
    grads = tf.placeholder(tf.float32, [2])
    factor = ff.FullFactor((grads,), 1)
    feeds = [[np.array([1.0, 2.0])], [np.array([3.0, -1.0])]]
    _, results = _run_two_updates(factor, [grads], feeds, 0.5)
    first, second = (np.outer(f[0], f[0]) for f in feeds)
    np.testing.assert_allclose(results[0], first, rtol=1e-6)
    np.testing.assert_allclose(
        results[1], (0.25 * first + 0.5 * second) / (1 - 0.25), rtol=1e-6
    )
    debias_vars = [v.op.name for v in tf.global_variables()]
    assert factor.get_cov_var().op.name + "/biased" in debias_vars


def test_update_is_built_inside_cond(graph, tf_behavior):
    ff.set_global_constants(zero_debias=True)
    factor = ff.FullFactor((tf.constant([1.0, 2.0]),), 2)
    factor.instantiate_cov_variables()
    update = tf.cond(
        tf.constant(True),
        lambda: factor.make_covariance_update_op(0.0),
        lambda: tf.zeros([2, 2]),
    )
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        np.testing.assert_allclose(sess.run(update), [[0.5, 1.0], [1.0, 2.0]])


def test_full_and_naive_diagonal_two_updates_two_sources(graph, tf_behavior, rng):
    weights, bias = tf.placeholder(tf.float32, [2, 2]), tf.placeholder(tf.float32, [2])
    other_w, other_b = (
        tf.placeholder(tf.float32, [2, 2]),
        tf.placeholder(tf.float32, [2]),
    )
    params_grads = ((weights, bias), (other_w, other_b))
    feeds = [
        [rng.randn(2, 2), rng.randn(2), rng.randn(2, 2), rng.randn(2)] for _ in range(2)
    ]
    columns = [
        [np.concatenate([f[0].ravel(), f[1]]), np.concatenate([f[2].ravel(), f[3]])]
        for f in feeds
    ]
    placeholders = [weights, bias, other_w, other_b]

    full_init, full = _run_two_updates(
        ff.FullFactor(params_grads, 3), placeholders, feeds, 0.7
    )
    full_estimates = [sum(np.outer(g, g) for g in cols) / 3 for cols in columns]
    np.testing.assert_allclose(full_init, np.eye(6))
    np.testing.assert_allclose(
        full[0], _ema(np.eye(6), full_estimates[:1], 0.7), rtol=1e-5
    )
    np.testing.assert_allclose(full[1], _ema(np.eye(6), full_estimates, 0.7), rtol=1e-5)

    naive_init, naive = _run_two_updates(
        ff.NaiveDiagonalFactor(params_grads, 3), placeholders, feeds, 0.7
    )
    naive_estimates = [sum(g[:, None] ** 2 for g in cols) / 3 for cols in columns]
    np.testing.assert_allclose(naive_init, np.ones((6, 1)))
    np.testing.assert_allclose(
        naive[1], _ema(np.ones((6, 1)), naive_estimates, 0.7), rtol=1e-5
    )


@pytest.mark.parametrize(
    "has_bias, expected",
    [
        (True, [[3, 3.5, 1], [3.5, 5.5, 1.5], [1, 1.5, 1]]),
        (False, [[3, 3.5], [3.5, 5.5]]),
    ],
)
def test_fully_connected_kronecker_anchor(graph, tf_behavior, has_bias, expected):
    factor = ff.FullyConnectedKroneckerFactor(
        ((tf.constant([[1.0, 2.0], [3.0, 4.0]]),),), has_bias=has_bias
    )
    _, results = _run_two_updates(factor, [], [[]], 0.5)
    np.testing.assert_allclose(results[0], expected)


def test_fully_connected_kronecker_sources_towers_and_ema(graph, tf_behavior, rng):
    ff.set_global_constants(tower_strategy="separate")
    towers = [
        [tf.placeholder(tf.float32, [None, 3]) for _ in range(2)] for _ in range(2)
    ]  # [source][tower]
    factor = ff.FullyConnectedKroneckerFactor(tuple(map(tuple, towers)), has_bias=True)
    feeds = [
        [rng.randn(4, 3), rng.randn(2, 3), rng.randn(4, 3), rng.randn(2, 3)]
        for _ in range(2)
    ]
    placeholders = [towers[0][0], towers[0][1], towers[1][0], towers[1][1]]
    _, results = _run_two_updates(factor, placeholders, feeds, 0.9)
    estimates = [
        sum(_fc_cov_reference(f[2 * s + t], True) for s in range(2) for t in range(2))
        / 2
        for f in feeds
    ]
    np.testing.assert_allclose(results[1], _ema(np.eye(4), estimates, 0.9), rtol=1e-5)


def test_tower_strategy_separate_equals_concat(graph, rng):
    inputs = [tf.constant(rng.randn(3, 2), tf.float32) for _ in range(2)]
    grads = [tf.constant(rng.randn(3, 2), tf.float32) for _ in range(2)]

    def new_covs(strategy):
        ff.set_global_constants(tower_strategy=strategy)
        if strategy == "concat":
            a_args = ((utils.PartitionedTensor(inputs),),)
            g_args = (utils.PartitionedTensor(grads),)
        else:
            a_args, g_args = (tuple(inputs),), tuple(grads)
        factors = [
            ff.FullyConnectedKroneckerFactor(a_args, has_bias=True),
            ff.FullyConnectedDiagonalFactor(a_args[0], (g_args,), has_bias=True),
        ]
        updates = []
        for factor in factors:
            with tf.variable_scope(strategy):
                factor.instantiate_cov_variables()
            updates.append(factor.make_covariance_update_op(0.0))
        return updates

    concat, separate = new_covs("concat"), new_covs("separate")
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        concat_values, separate_values = sess.run([concat, separate])
    for concat_value, separate_value in zip(concat_values, separate_values):
        np.testing.assert_allclose(concat_value, separate_value, rtol=1e-5)


def test_fully_connected_diagonal_two_updates(graph, tf_behavior, rng):
    inputs = [tf.placeholder(tf.float32, [None, 2]) for _ in range(2)]
    grads = [
        [tf.placeholder(tf.float32, [None, 3]) for _ in range(2)] for _ in range(2)
    ]
    factor = ff.FullyConnectedDiagonalFactor(
        tuple(inputs), tuple(map(tuple, grads)), has_bias=True
    )
    placeholders = inputs + grads[0] + grads[1]
    feeds = [
        [rng.randn(3, 2), rng.randn(3, 2)] + [rng.randn(3, 3) for _ in range(4)]
        for _ in range(2)
    ]

    def estimate(feed):
        total = 0.0
        for source in range(2):
            for tower in range(2):
                x = feed[tower]
                g = feed[2 + 2 * source + tower]
                per_example = [
                    np.outer(np.append(x[b], 1.0), g[b]) ** 2 for b in range(3)
                ]
                total = total + sum(per_example) / 3
        return total / 2

    initial, results = _run_two_updates(factor, placeholders, feeds, 0.5)
    np.testing.assert_allclose(initial, np.ones((3, 3)))
    np.testing.assert_allclose(
        results[1], _ema(np.ones((3, 3)), map(estimate, feeds), 0.5), rtol=1e-5
    )


def test_embedding_anchor(graph, tf_behavior):
    factor = ff.EmbeddingInputKroneckerFactor((tf.constant([[0], [1], [4]]),), 5)
    _, results = _run_two_updates(factor, [], [[]], 0.0)
    np.testing.assert_allclose(results[0], np.array([1, 1, 0, 0, 1]) / 3.0, rtol=1e-6)


def test_embedding_counts_two_towers_no_one_hot(graph, tf_behavior, rng):
    ids = [tf.placeholder(tf.int32, [None, 2]), tf.placeholder(tf.int64, [None])]
    factor = ff.EmbeddingInputKroneckerFactor(tuple(ids), 6, dtype=tf.float64)
    feeds = [
        [rng.randint(0, 6, size=(4, 2)), rng.randint(0, 6, size=3)] for _ in range(2)
    ]

    def estimate(feed):
        per_tower = []
        for tower_ids in feed:
            counts = np.zeros(6)
            for row in np.reshape(tower_ids, [tower_ids.shape[0], -1]):
                for vocab_id in row:
                    counts[vocab_id] += 1
            per_tower.append(counts / tower_ids.shape[0])
        return sum(per_tower) / 2

    _, results = _run_two_updates(factor, ids, feeds, 0.25)
    assert results[0].dtype == np.float64
    np.testing.assert_allclose(results[1], _ema(np.ones(6), map(estimate, feeds), 0.25))
    op_types = {op.type for op in tf.get_default_graph().get_operations()}
    assert "OneHot" not in op_types


def test_embedding_rejects_rank_three_ids(graph):
    factor = ff.EmbeddingInputKroneckerFactor((tf.zeros([2, 2, 2], tf.int32),), 5)
    factor.instantiate_cov_variables()
    with pytest.raises(ValueError, match="rank <= 2"):
        factor.make_covariance_update_op(0.5)


def test_factor_names(graph):
    x = tf.constant([[1.0, 2.0]], name="x")
    g = tf.constant([[1.0, 2.0]], name="g")
    assert ff.FullyConnectedKroneckerFactor(((x,),), True).name == "ff_fckron_x_True"
    assert ff.FullyConnectedDiagonalFactor((x,), ((g,),)).name == "ff_diagfc_x_g"
    assert ff.FullFactor(((x, g),), np.int64(2)).name == "ff_full_x__g_2"
    assert ff.NaiveDiagonalFactor((x,), 4).name == "ff_naivediag_x_4"
    ids = tf.constant([1, 2], name="ids")
    assert ff.EmbeddingInputKroneckerFactor((ids,), 3).name == "ff_diag_embedding_ids"
