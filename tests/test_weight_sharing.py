"""KFAC-expand and KFAC-reduce (Eschenhagen et al. 2023) for shared weights.

A weight applied at several positions per example — a dense layer over
`[batch, T, in]`, a `*_multi` layer, a convolution — gets "kron_expand" (every
position an example; what "kron" and "kron_indep" compute) or "kron_reduce"
(positions aggregated per example). Each test runs the estimator once with
`estimation_mode="exact"` and `cov_ema_decay=0`, so the factors are the
mini-batch statistics, and compares them with numpy: the formulas on a
nonlinear model, and on linear models the exact GGN block, which the paper
shows each approximation equals in its own setting.
"""

import numpy as np
import pytest
import session_helpers
import tensorflow.compat.v1 as tf
import tolerances
import weight_sharing_references as ref

import kfac
from kfac.ops import estimator

N, P, IN, OUT = 3, 4, 2, 2
SQRT2 = np.sqrt(2.0)  # the factor B of a normal loss with variance 0.5


def _factor_values(layer_collection, variables):
    """`(A, G, full block)` of the first block after one covariance update."""

    def fetch(blocks):
        block = blocks[0]
        return [
            block._input_factor.get_cov(),
            block._output_factor.get_cov(),
            block.full_fisher_block(),
        ]

    return session_helpers.exact_statistics(layer_collection, variables, fetch)


def _dense_model(x_np, w_np, head_np, approx, pooled, nonlinear):
    """`s = x W` over `[N, P, IN]`, then `f = φ(s) V` per position (loss per
    position) or `f = mean_p φ(s) V` (loss per example); φ = tanh or identity."""
    x = tf.constant(x_np)
    w = tf.get_variable("w", initializer=w_np)
    s = tf.einsum("npi,io->npo", x, w)
    h = tf.tanh(s) if nonlinear else s
    lc = kfac.LayerCollection()
    lc.register_fully_connected(w, x, s, approx=approx)
    if pooled:
        f = tf.matmul(tf.reduce_mean(h, axis=1), tf.constant(head_np))
    else:
        f = tf.reshape(tf.einsum("npo,oc->npc", h, tf.constant(head_np)), [-1, OUT])
    lc.register_normal_predictive_distribution(f)
    return lc, [w]


def _dense_sources(x_np, w_np, head_np, pooled, nonlinear):
    """`[S, N, P, OUT]`: the exact sources backpropagated to `s`."""
    s = x_np @ w_np
    slope = 1 - np.tanh(s) ** 2 if nonlinear else np.ones_like(s)
    scale = SQRT2 / P if pooled else SQRT2
    return np.stack([slope * head_np[:, i] * scale for i in range(OUT)])


@pytest.mark.parametrize("pooled", [False, True], ids=["per_position", "per_example"])
@pytest.mark.parametrize("approx", ["kron_expand", "kron_reduce"])
def test_dense_factors_equal_numpy_formulas(rng, approx, pooled):
    x_np, w_np, head_np = rng.randn(N, P, IN), rng.randn(IN, OUT), rng.randn(OUT, OUT)
    with tf.Graph().as_default():
        lc, variables = _dense_model(x_np, w_np, head_np, approx, pooled, True)
        input_factor, output_factor, block = _factor_values(lc, variables)
    sources = _dense_sources(x_np, w_np, head_np, pooled, True)
    if approx == "kron_expand":
        # register_fully_connected: every position is its own example (c = 1).
        expected_a, expected_g, _ = ref.expand_factors(
            x_np.reshape(N * P, 1, IN), sources.reshape(OUT, N * P, 1, OUT)
        )
    else:
        expected_a, expected_g = ref.reduce_factors(x_np, sources)
    np.testing.assert_allclose(input_factor, expected_a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(output_factor, expected_g, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(block, np.kron(expected_a, expected_g), rtol=1e-10)


@pytest.mark.parametrize(
    "approx, pooled",
    [("kron_expand", False), ("kron_reduce", True)],
    ids=["expand_setting", "reduce_setting"],
)
def test_dense_block_is_the_exact_ggn_in_its_setting(rng, approx, pooled):
    """Linear network: expand is exact with a loss per position, reduce with
    the positions averaged before the loss (Eschenhagen et al. 2023, §3.2)."""
    x_np, w_np, head_np = rng.randn(N, P, IN), rng.randn(IN, OUT), rng.randn(OUT, OUT)
    with tf.Graph().as_default():
        lc, variables = _dense_model(x_np, w_np, head_np, approx, pooled, False)
        _, _, block = _factor_values(lc, variables)
    output_fisher = 2.0 * np.eye(OUT)
    if pooled:
        jacobians = [ref.linear_jacobian(x_np[n].mean(0), head_np) for n in range(N)]
    else:
        jacobians = [ref.linear_jacobian(row, head_np) for row in x_np.reshape(-1, IN)]
    exact = ref.ggn_block(jacobians, output_fisher)
    np.testing.assert_allclose(block, exact, rtol=1e-10, atol=1e-12)


def test_reduce_is_not_exact_in_the_expand_setting_and_vice_versa(rng):
    """Each approximation is exact in its own setting only (the paper's §3.2)."""
    x_np, w_np, head_np = rng.randn(N, P, IN), rng.randn(IN, OUT), rng.randn(OUT, OUT)
    for approx, pooled in (("kron_reduce", False), ("kron_expand", True)):
        with tf.Graph().as_default():
            lc, variables = _dense_model(x_np, w_np, head_np, approx, pooled, False)
            _, _, block = _factor_values(lc, variables)
        if pooled:
            jacobians = [
                ref.linear_jacobian(x_np[n].mean(0), head_np) for n in range(N)
            ]
        else:
            jacobians = [ref.linear_jacobian(r, head_np) for r in x_np.reshape(-1, IN)]
        exact = ref.ggn_block(jacobians, 2.0 * np.eye(OUT))
        assert np.abs(block - exact).max() > 0.05 * np.abs(exact).max()


def _multi_model(x_np, w_np, head_np, approx, pooled):
    """The dense layer of `_dense_model` registered with
    `register_fully_connected_multi` (a list over the P uses), bias included;
    linear; loss per example on the concatenated (or averaged) uses."""
    w = tf.get_variable("w", initializer=w_np)
    b = tf.get_variable("b", initializer=np.zeros(OUT))
    inputs = [tf.constant(x_np[:, p]) for p in range(P)]
    outputs = [tf.matmul(x, w) + b for x in inputs]
    lc = kfac.LayerCollection()
    lc.register_fully_connected_multi((w, b), inputs, outputs, approx=approx)
    head = tf.constant(head_np)
    if pooled:
        f = tf.matmul(tf.add_n(outputs) / P, head)
    else:
        f = tf.concat([tf.matmul(s, head) for s in outputs], axis=1)
    lc.register_normal_predictive_distribution(f)
    return lc, [w, b]


@pytest.mark.parametrize(
    "approx, pooled",
    [("kron_indep", False), ("kron_expand", False), ("kron_reduce", True)],
)
def test_multi_use_block_is_the_exact_ggn_in_its_setting(rng, approx, pooled):
    """`register_fully_connected_multi`: "kron_indep" (= "kron_expand") is exact
    for a loss per example that sums its uses' outputs, `F = P·A ⊗ G`;
    "kron_reduce" when the uses are averaged before the loss."""
    x_np, w_np, head_np = rng.randn(N, P, IN), rng.randn(IN, OUT), rng.randn(OUT, OUT)
    with tf.Graph().as_default():
        lc, variables = _multi_model(x_np, w_np, head_np, approx, pooled)
        _, _, block = _factor_values(lc, variables)
    inputs = ref.with_ones(x_np)
    if pooled:
        jacobians = [ref.linear_jacobian(inputs[n].mean(0), head_np) for n in range(N)]
        exact = ref.ggn_block(jacobians, 2.0 * np.eye(OUT))
    else:
        # One example sees P independent outputs: a block-diagonal Jacobian.
        exact = sum(
            ref.ggn_block(
                [ref.linear_jacobian(inputs[n, p], head_np) for n in range(N)],
                2.0 * np.eye(OUT),
            )
            for p in range(P)
        )
    np.testing.assert_allclose(block, exact, rtol=1e-10, atol=1e-12)


def _patches(x_np, size):
    """SAME, stride-1 patches `[N, H, W, size·size·C]` (filter order): zeros
    padded after the last row and column, as TensorFlow pads an even filter."""
    n, height, width, _ = x_np.shape
    x_np = np.pad(x_np, [(0, 0), (0, size - 1), (0, size - 1), (0, 0)])
    return np.stack(
        [
            np.stack(
                [
                    x_np[:, i : i + size, j : j + size, :].reshape(n, -1)
                    for j in range(width)
                ],
                axis=1,
            )
            for i in range(height)
        ],
        axis=1,
    )


@pytest.mark.parametrize("approx", ["kron_expand", "kron_reduce"])
def test_conv_block_is_the_exact_ggn_in_its_setting(rng, approx):
    """A 2x2 SAME convolution of 3x3 images (9 locations), linear head:
    expand is exact for a loss per image over the per-location outputs,
    reduce for a loss on the locations' average; both with a bias."""
    x_np = rng.randn(N, 3, 3, IN)
    filter_np = rng.randn(2, 2, IN, OUT)
    head_np = rng.randn(OUT, OUT)
    with tf.Graph().as_default():
        x = tf.constant(x_np)
        kernel = tf.get_variable("kernel", initializer=filter_np)
        bias = tf.get_variable("bias", initializer=np.zeros(OUT))
        s = tf.nn.conv2d(x, kernel, [1, 1, 1, 1], "SAME") + bias
        lc = kfac.LayerCollection()
        lc.register_conv2d((kernel, bias), [1, 1, 1, 1], "SAME", x, s, approx=approx)
        if approx == "kron_reduce":
            f = tf.matmul(tf.reduce_mean(s, axis=[1, 2]), tf.constant(head_np))
        else:
            f = tf.reshape(tf.einsum("nijo,oc->nijc", s, tf.constant(head_np)), [N, -1])
        lc.register_normal_predictive_distribution(f)
        input_factor, output_factor, block = _factor_values(lc, [kernel, bias])
    locations = 9
    patches = ref.with_ones(_patches(x_np, 2).reshape(N, locations, -1))
    output_fisher = 2.0 * np.eye(OUT)
    if approx == "kron_reduce":
        jacobians = [ref.linear_jacobian(patches[n].mean(0), head_np) for n in range(N)]
        exact = ref.ggn_block(jacobians, output_fisher)
        sources = np.stack(
            [
                np.ones([N, locations, OUT]) * head_np[:, i] * SQRT2 / locations
                for i in range(OUT)
            ]
        )
        expected_a, expected_g = ref.reduce_factors(
            patches[..., :-1], sources, has_bias=True
        )
        np.testing.assert_allclose(input_factor, expected_a, rtol=1e-10)
        np.testing.assert_allclose(output_factor, expected_g, rtol=1e-10)
    else:
        exact = sum(
            ref.ggn_block(
                [ref.linear_jacobian(patches[n, loc], head_np) for n in range(N)],
                output_fisher,
            )
            for loc in range(locations)
        )
    np.testing.assert_allclose(block, exact, rtol=1e-10, atol=1e-12)


def test_expand_is_the_name_of_kron_and_kron_indep():
    """ "kron_expand" selects the blocks "kron" and "kron_indep" select."""
    fisher_blocks = kfac.fisher_blocks
    with tf.Graph().as_default():
        x = tf.zeros([2, 3, 4])
        w = tf.get_variable("w", [4, 5])
        lc = kfac.LayerCollection()
        lc.register_fully_connected(
            w, x, tf.einsum("bti,io->bto", x, w), approx="kron_expand"
        )
        w2 = tf.get_variable("w2", [4, 5])
        uses = [tf.zeros([2, 4]) for _ in range(3)]
        lc.register_fully_connected_multi(
            w2, uses, [tf.matmul(u, w2) for u in uses], approx="kron_expand"
        )
        blocks = list(lc.get_blocks())
        records = list(lc.layer_registrations.values())
    assert type(blocks[0]) is fisher_blocks.FullyConnectedKFACBasicFB
    assert type(blocks[1]) is fisher_blocks.FullyConnectedMultiIndepFB
    assert [record.approximation for record in records] == ["kron_expand"] * 2


def test_reduce_factors_cost_fewer_rows(rng):
    """KFAC-reduce's outer products run over the N examples, not N·P positions:
    its statistics ops multiply `[N, n]` matrices."""
    with tf.Graph().as_default():
        x_np, w_np, head_np = (
            rng.randn(N, P, IN),
            rng.randn(IN, OUT),
            rng.randn(OUT, OUT),
        )
        lc, variables = _dense_model(x_np, w_np, head_np, "kron_reduce", True, True)
        fisher = estimator.make_fisher_estimator(
            variables=variables,
            layer_collection=lc,
            cov_ema_decay=0.0,
            damping=0.1,
            estimation_mode="gradients",
        )
        fisher.make_ops_and_vars()
        rows = list(lc.get_blocks())[0]._input_factor._position_statistics.rows(
            tf.constant(x_np), 0
        )[0]
        assert rows.shape.as_list() == [N, IN]


def _one_step(x_np, params, reshape_by_hand, approx):
    """One KfacOptimizer step of a two-layer model over `[N, P, IN]` inputs
    (loss per position), registered on the 3-D tensors or on rows."""
    x = tf.constant(x_np)
    w1 = tf.get_variable("w1", initializer=params[0])
    b1 = tf.get_variable("b1", initializer=params[1])
    w2 = tf.get_variable("w2", initializer=params[2])
    if reshape_by_hand:
        x = tf.reshape(x, [-1, IN])
        s1 = tf.matmul(x, w1) + b1
        h = tf.tanh(s1)
        s2 = tf.matmul(h, w2)
    else:
        s1 = tf.einsum("npi,io->npo", x, w1) + b1
        h = tf.tanh(s1)
        s2 = tf.einsum("npo,oc->npc", h, w2)
    lc = kfac.LayerCollection()
    lc.register_fully_connected((w1, b1), x, s1, approx=approx)
    lc.register_fully_connected(w2, h, s2, approx=approx)
    logits = tf.reshape(s2, [-1, OUT])
    lc.register_categorical_predictive_distribution(logits)
    labels = tf.constant(np.arange(N * P) % OUT)
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
    _, after = session_helpers.one_exact_kfac_step(
        loss, lc, [w1, b1, w2], 0.1, 0.05, momentum=0.9
    )
    return after


@pytest.mark.parametrize("approx", ["kron", "kron_expand", "diagonal", "ekfac"])
def test_dense_over_sequences_equals_the_hand_reshaped_registration(rng, approx):
    """`register_fully_connected` on `[N, P, in]` / `[N, P, out]` tensors gives
    the step of the same layer registered on `[N·P, in]` rows (float32)."""
    x_np = rng.randn(N, P, IN).astype(np.float32)
    params = [
        rng.randn(*shape).astype(np.float32)
        for shape in ((IN, OUT), (OUT,), (OUT, OUT))
    ]
    results = []
    for reshape_by_hand in (True, False):
        with tf.Graph().as_default():
            results.append(_one_step(x_np, params, reshape_by_hand, approx))
    for by_hand, sequences, initial in zip(*results, params):
        # float32 parameters: 1e-6 of their magnitude.
        tolerances.assert_close(sequences, by_hand, rtol=1e-6)
        assert np.abs(initial - by_hand).max() > 1e-3  # a real step
