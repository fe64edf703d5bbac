"""Tests of fisher_factors: constants, naming, helpers, moving averages, the
abstract factor classes, inverses, and the dense / fully connected / embedding
factors, against numpy references (API.md §4)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from kfac.ops import fisher_factors as ff
from kfac.ops import utils
from kfac.ops._config import KfacConfig
from kfac.ops._factors import second_moments


class DampingFunc(object):
    """Stand-in for fisher_blocks.PackagedFunc: callable with a stable `func_id`."""

    def __init__(self, value, func_id=None):
        self._value = value
        self.func_id = (value,) if func_id is None else tuple(func_id)

    def __call__(self):
        return self._value



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


# ----------------------------------------------------------------- constants


def test_default_constants():
    assert ff.INIT_COVARIANCES_AT_ZERO is False
    assert ff.ZERO_DEBIAS is False
    assert ff.EIGENVALUE_DECOMPOSITION_THRESHOLD == 2
    assert ff.EIGENVALUE_CLIPPING_THRESHOLD == 0.0
    assert ff.TOWER_STRATEGY == "concat"


def test_set_global_constants_overwrites_only_given_values():
    ff.set_global_constants(zero_debias=True, tower_strategy="separate")
    assert (ff.ZERO_DEBIAS, ff.TOWER_STRATEGY) == (True, "separate")
    assert KfacConfig.from_defaults().tower_strategy == "separate"
    ff.set_global_constants(
        init_covariances_at_zero=True,
        eigenvalue_decomposition_threshold=5,
        eigenvalue_clipping_threshold=0.25,
    )
    assert ff.INIT_COVARIANCES_AT_ZERO is True
    assert ff.EIGENVALUE_DECOMPOSITION_THRESHOLD == 5
    assert ff.EIGENVALUE_CLIPPING_THRESHOLD == 0.25
    assert (ff.ZERO_DEBIAS, ff.TOWER_STRATEGY) == (True, "separate")


def test_module_attribute_assignment_forwards_to_config():
    ff.TOWER_STRATEGY = "separate"
    assert KfacConfig.from_defaults().tower_strategy == "separate"
    assert ff.FullyConnectedKroneckerFactor(((tf.ones([2, 2]),),)).config == (
        KfacConfig(tower_strategy="separate")
    )
    with pytest.raises(AttributeError, match="NO_SUCH_CONSTANT"):
        ff.NO_SUCH_CONSTANT  # noqa: B018


def test_unknown_tower_strategy_raises_when_building_update(graph):
    ff.set_global_constants(tower_strategy="bogus")
    factor = ff.FullyConnectedKroneckerFactor(((tf.ones([2, 2]),),))
    factor.instantiate_cov_variables()
    with pytest.raises(ValueError, match="TOWER_STRATEGY"):
        factor.make_covariance_update_op(0.5)


# -------------------------------------------------------------------- naming


def test_scope_string_from_params_example(graph):
    x, y = tf.constant(1.0), tf.constant(2.0)
    assert (
        ff.scope_string_from_params([[1, 2, 3], "foo", True, 4, (x, y)])
        == "1-2-3_foo_True_4_Const__Const_1"
    )


def test_scope_string_from_params_single_values_and_conversions(graph):
    x = tf.constant(1.0, name="x")
    assert ff.scope_string_from_params(x) == "x"
    assert ff.scope_string_from_params(None) == "None"
    assert ff.scope_string_from_params([np.int64(3), (np.int32(1), 2)]) == "3_1-2"
    assert ff.scope_string_from_params([tf.Dimension(4)]) == "4"
    partitioned = utils.PartitionedTensor(
        [tf.ones([1, 2], name="a"), tf.ones([2, 2], name="b")]
    )
    assert ff.scope_string_from_params([partitioned]) == "a__b"


@pytest.mark.parametrize("bad", [0.5, np.float32(0.5), object()])
def test_scope_string_from_params_rejects_unsupported(bad):
    with pytest.raises(ValueError, match="unsupported parameter type"):
        ff.scope_string_from_params([bad])


def test_scope_string_from_name(graph):
    with tf.name_scope("gradients/MatMul_grad"):
        tensor = tf.constant(1.0, name="MatMul_1")
    assert tensor.name == "gradients/MatMul_grad/MatMul_1:0"
    assert ff.scope_string_from_name(tensor) == "gradients_MatMul_grad_MatMul_1"
    other = tf.constant(2.0, name="b")
    assert ff.scope_string_from_name([tensor, (other,)]) == (
        "gradients_MatMul_grad_MatMul_1__b"
    )


def test_scalar_list_and_func_strings(graph):
    damping = tf.constant(0.1, name="damp")
    assert ff.scalar_or_tensor_to_string(-1) == "-1"
    assert ff.scalar_or_tensor_to_string(np.int64(5)) == "5"
    assert ff.scalar_or_tensor_to_string(np.float64(0.5)) == "0.5"
    assert ff.scalar_or_tensor_to_string(damping) == "damp"
    assert ff.list_to_string(["power", 0.5, damping, 2]) == "power_0.5_damp_2"
    func = DampingFunc(0.1, func_id=("normalize_damping", 0.1, np.int64(4)))
    assert ff.graph_func_to_id(func) == ("normalize_damping", 0.1, 4)
    assert ff.graph_func_to_string(func) == "normalize_damping_0.1_4"


# ------------------------------------------------------------------- helpers


def test_compute_cov_symmetric_and_cross(graph, rng):
    x, y = rng.randn(5, 3), rng.randn(5, 2)
    with tf.Session() as sess:
        cov, cross, normalised = sess.run(
            [
                ff.compute_cov(tf.constant(x)),
                ff.compute_cov(tf.constant(x), tensor_right=tf.constant(y)),
                ff.compute_cov(tf.constant(x), normalizer=2),
            ]
        )
    np.testing.assert_allclose(cov, sum(np.outer(r, r) for r in x) / 5)
    np.testing.assert_allclose(cross, sum(np.outer(a, b) for a, b in zip(x, y)) / 5)
    np.testing.assert_allclose(normalised, x.T @ x / 2)


@pytest.mark.parametrize("block_size", [320, 3, 2, 1])
@pytest.mark.parametrize("append_ones", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_symmetric_second_moment_blocks(graph, rng, monkeypatch, block_size,
                                        append_ones, dtype):
    # Small blocks force the blocked path (1, 2, 3 and 4 column groups of 7).
    monkeypatch.setattr(second_moments, "BLOCK_SIZE", block_size)
    x = rng.randn(6, 7).astype(dtype)
    rows = tf.placeholder(dtype, [None, 7])
    with tf.Session() as sess:
        moment, normalised = sess.run(
            [second_moments.symmetric_second_moment(rows, append_ones=append_ones),
             second_moments.symmetric_second_moment(
                 rows, normalizer=tf.constant(4), append_ones=append_ones)],
            {rows: x})
    padded = np.concatenate([x, np.ones((6, 1))], 1) if append_ones else x
    expected = sum(np.outer(row, row) for row in padded.astype(np.float64))
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    assert moment.dtype == dtype
    np.testing.assert_allclose(moment, expected / 6, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(normalised, expected / 4, rtol=tolerance,
                               atol=tolerance)
    # Exactly symmetric, whatever the blocks.
    np.testing.assert_array_equal(moment, moment.T)
    np.testing.assert_array_equal(normalised, normalised.T)


@pytest.mark.parametrize("block_size", [320, 2, 1])
def test_symmetric_outer_product(graph, rng, monkeypatch, block_size):
    monkeypatch.setattr(second_moments, "BLOCK_SIZE", block_size)
    matrix = rng.randn(5, 3)
    with tf.Session() as sess:
        product = sess.run(second_moments.symmetric_outer_product(tf.constant(matrix)))
    expected = np.array([[row_i @ row_j for row_j in matrix] for row_i in matrix])
    np.testing.assert_allclose(product, expected, rtol=1e-12)
    if block_size < 5:  # blocked: exactly symmetric
        np.testing.assert_array_equal(product, product.T)


def test_num_column_blocks():
    assert second_moments.num_column_blocks(None) == 1
    assert second_moments.num_column_blocks(250) == 1
    assert second_moments.num_column_blocks(785) == 2
    assert second_moments.num_column_blocks(1001) == 3
    assert second_moments.num_column_blocks(10 ** 5) == second_moments.MAX_BLOCKS


def test_symmetric_second_moment_unknown_width(graph, rng):
    x = rng.randn(5, 3)
    rows = tf.placeholder(tf.float64, [None, None])
    with tf.Session() as sess:
        moment = sess.run(second_moments.symmetric_second_moment(
            rows, append_ones=True), {rows: x})
    padded = np.concatenate([x, np.ones((5, 1))], 1)
    np.testing.assert_allclose(moment, padded.T @ padded / 5)


def test_append_homog_with_unknown_batch(graph):
    tensor = tf.placeholder(tf.float32, [None, 2, 2])
    value = np.arange(12.0).reshape(3, 2, 2)
    with tf.Session() as sess:
        result = sess.run(ff.append_homog(tensor), {tensor: value})
    np.testing.assert_array_equal(result[..., :2], value)
    np.testing.assert_array_equal(result[..., 2], np.ones((3, 2)))


def test_initializers(graph):
    with tf.Session() as sess:
        inverse, cov, diag = sess.run(
            [
                ff.inverse_initializer([3, 3], tf.float32),
                ff.covariance_initializer([2, 2], tf.float64),
                ff.diagonal_covariance_initializer([2, 3], tf.float32, None),
            ]
        )
        ff.set_global_constants(init_covariances_at_zero=True)
        zero_cov, zero_diag = sess.run(
            [
                ff.covariance_initializer([2, 2], tf.float32),
                ff.diagonal_covariance_initializer([4], tf.float32, None),
            ]
        )
    np.testing.assert_array_equal(inverse, np.eye(3))
    np.testing.assert_array_equal(cov, np.eye(2))
    assert cov.dtype == np.float64
    np.testing.assert_array_equal(diag, np.ones((2, 3)))
    np.testing.assert_array_equal(zero_cov, np.zeros((2, 2)))
    np.testing.assert_array_equal(zero_diag, np.zeros(4))


def test_place_on_device(graph):
    with ff.place_on_device("/cpu:0"):
        placed = tf.constant(1.0)
    with ff.place_on_device(""):
        unplaced = tf.constant(1.0)
    with ff.place_on_device(None):
        unplaced_too = tf.constant(1.0)
    assert "CPU:0" in placed.device.upper()
    assert unplaced.device == "" and unplaced_too.device == ""


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
