"""Masks and per-example weights in the layer statistics (padded batches).

Every comparison runs the estimator once with `estimation_mode="exact"` and
`cov_ema_decay=0` (the factors are the mini-batch statistics, no sampling) in
float64: a padded batch with a mask must give the blocks of the batch without
the padding, and a weight of 2 on an example (given to the layers and to the
loss) the blocks of the batch with that example repeated.
"""

import numpy as np
import pytest
import sequence_references as references
import session_helpers
import tensorflow.compat.v1 as tf

import kfac
from kfac.ops import estimator

IN, HIDDEN, OUT = 3, 4, 2


def _blocks(layer_collection, variables, fetch=None):
    """Every block's undamped dense matrix (or `fetch(block)`) after one
    covariance update."""
    fetch = fetch or (lambda block: block.full_fisher_block())
    return session_helpers.exact_statistics(
        layer_collection,
        variables,
        lambda blocks: (
            [fetch(blocks[0])] + [block.full_fisher_block() for block in blocks[1:]]
        ),
    )


def _assert_blocks_equal(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _parameters(seed=1):
    rng = np.random.RandomState(seed)
    return dict(
        w1=rng.randn(IN, HIDDEN), b1=rng.randn(HIDDEN), w2=rng.randn(HIDDEN, OUT)
    )


def _sequence_dense_model(x_np, params, approx, mask=None, weights=None, pooled=False):
    """Two dense layers over `[batch, T, IN]`, tanh between; the loss is per
    position (`pooled=False`) or on the mask-weighted mean over positions."""
    x = tf.constant(x_np)
    w1 = tf.get_variable("w1", initializer=params["w1"])
    b1 = tf.get_variable("b1", initializer=params["b1"])
    w2 = tf.get_variable("w2", initializer=params["w2"])
    s1 = tf.einsum("bti,ih->bth", x, w1) + b1
    h = tf.tanh(s1)
    s2 = tf.einsum("bth,ho->bto", h, w2)
    lc = kfac.LayerCollection()
    kwargs = dict(approx=approx, mask=mask, weights=weights)
    lc.register_fully_connected((w1, b1), x, s1, **kwargs)
    lc.register_fully_connected(w2, h, s2, **kwargs)
    if pooled:
        real = tf.ones(tf.shape(s2)[:2], tf.float64) if mask is None else mask
        real = tf.cast(real, tf.float64)[:, :, None]
        count = tf.reduce_sum(real, 1)
        f = tf.reduce_sum(s2 * real, 1) / tf.maximum(count, 1.0)
        lc.register_normal_predictive_distribution(
            f, weights=None if mask is None else tf.cast(count[:, 0] > 0, tf.float64)
        )
    else:
        # The loss gets the layers' weights, one per position.
        loss_weights = None
        if mask is not None or weights is not None:
            loss_weights = np.ones(x_np.shape[:2])
            for values in (mask, weights):
                if values is not None:
                    values = np.asarray(values, dtype=float)
                    loss_weights = loss_weights * values.reshape(
                        values.shape + (1,) * (2 - values.ndim)
                    )
            loss_weights = loss_weights.reshape(-1)
        lc.register_normal_predictive_distribution(
            tf.reshape(s2, [-1, OUT]), weights=loss_weights
        )
    return lc, [w1, b1, w2]


def _padded(x_np, extra_steps, extra_examples, rng):
    """`x` with garbage time steps and examples appended, and the 0/1 mask."""
    batch, steps = x_np.shape[:2]
    padded = rng.randn(batch + extra_examples, steps + extra_steps, x_np.shape[2])
    padded[:batch, :steps] = x_np
    mask = np.zeros(padded.shape[:2])
    mask[:batch, :steps] = 1.0
    return padded, mask


@pytest.mark.parametrize("pooled", [False, True], ids=["loss_per_step", "pooled"])
@pytest.mark.parametrize("approx", ["kron", "kron_reduce"])
def test_padded_dense_sequences_give_the_unpadded_blocks(rng, approx, pooled):
    x_np = rng.randn(3, 4, IN)
    padded, mask = _padded(x_np, extra_steps=2, extra_examples=1, rng=rng)
    params = _parameters()
    with tf.Graph().as_default():
        expected = _blocks(*_sequence_dense_model(x_np, params, approx, pooled=pooled))
    with tf.Graph().as_default():
        actual = _blocks(
            *_sequence_dense_model(padded, params, approx, mask=mask, pooled=pooled)
        )
    _assert_blocks_equal(actual, expected)


def test_padded_dense_sequences_give_the_unpadded_ekfac_blocks(rng):
    """EKFAC: the bases (the Kronecker factors' eigenvectors) and the scaling
    `s` in them, after a covariance, an inverse and a covariance update."""
    x_np = rng.randn(3, 4, IN)
    padded, mask = _padded(x_np, extra_steps=2, extra_examples=1, rng=rng)
    params = _parameters()
    results = []
    for data, data_mask in ((x_np, None), (padded, mask)):
        with tf.Graph().as_default():
            lc, variables = _sequence_dense_model(data, params, "ekfac", mask=data_mask)
            results.append(
                session_helpers.exact_statistics(
                    lc,
                    variables,
                    lambda blocks: [block.full_fisher_block() for block in blocks],
                    refresh_bases=True,
                )
            )
    _assert_blocks_equal(results[1], results[0])


@pytest.mark.parametrize("form", ["bool_mask", "batch_weights"])
def test_bool_masks_and_batch_weights_broadcast_over_steps(rng, form):
    """A bool mask is a 0/1 mask; `[batch]` weights cover every step."""
    x_np = rng.randn(3, 4, IN)
    padded, mask = _padded(x_np, extra_steps=0, extra_examples=2, rng=rng)
    params = _parameters()
    with tf.Graph().as_default():
        expected = _blocks(*_sequence_dense_model(x_np, params, "kron"))
    with tf.Graph().as_default():
        if form == "bool_mask":
            model = _sequence_dense_model(padded, params, "kron", mask=mask > 0)
        else:
            model = _sequence_dense_model(padded, params, "kron", weights=mask[:, 0])
        actual = _blocks(*model)
    _assert_blocks_equal(actual, expected)


def test_weight_two_equals_the_example_repeated(rng):
    """Weights 2 on one example, given to the layers and to the loss, give the
    blocks of the batch in which that example appears twice."""
    x_np = rng.randn(3, 4, IN)
    repeated = np.concatenate([x_np, x_np[1:2]], axis=0)
    weights = np.array([1.0, 2.0, 1.0])
    params = _parameters()
    with tf.Graph().as_default():
        expected = _blocks(*_sequence_dense_model(repeated, params, "kron"))
    with tf.Graph().as_default():
        actual = _blocks(*_sequence_dense_model(x_np, params, "kron", weights=weights))
    _assert_blocks_equal(actual, expected)


def _multi_use_model(x_np, params, approx, mask=None, mask_format="list"):
    """A dense layer applied at each of T uses (list format), its outputs
    averaged over the real uses and fed to a linear head."""
    steps = x_np.shape[1]
    w = tf.get_variable("w", initializer=params["w1"])
    b = tf.get_variable("b", initializer=params["b1"])
    head = tf.get_variable("head", initializer=params["w2"])
    inputs = [tf.constant(x_np[:, t]) for t in range(steps)]
    outputs = [tf.matmul(x, w) + b for x in inputs]
    real = np.ones(x_np.shape[:2]) if mask is None else mask
    pooled = tf.add_n([tf.tanh(s) * real[:, t : t + 1] for t, s in enumerate(outputs)])
    f = tf.matmul(pooled / real.sum(1, keepdims=True), head)
    lc = kfac.LayerCollection()
    if mask is not None and mask_format == "folded":
        mask = mask.T.reshape(-1)
    elif mask is not None and mask_format == "list":
        mask = [mask[:, t] for t in range(steps)]
    lc.register_fully_connected_multi((w, b), inputs, outputs, approx=approx, mask=mask)
    lc.register_fully_connected(head, pooled / real.sum(1, keepdims=True), f)
    lc.register_normal_predictive_distribution(f)
    return lc, [w, b, head]


@pytest.mark.parametrize("mask_format", ["list", "folded", "batch_by_uses"])
@pytest.mark.parametrize("approx", ["kron_indep", "kron_reduce", "kron_series_2"])
def test_padded_uses_give_the_unpadded_blocks(rng, approx, mask_format):
    """Extra uses masked out (every format of `mask`) leave the multi-use block
    as without them: for "kron_indep", `T_pad·A ⊗ G` equals `T·A ⊗ G`."""
    x_np = rng.randn(3, 4, IN)
    padded, mask = _padded(x_np, extra_steps=2, extra_examples=0, rng=rng)
    params = _parameters()
    fetch = None
    if approx == "kron_series_2":
        # No dense form: the factors' moments `cov` and `cov_dt1` instead. A
        # padded step pairs with nothing; G is normalised by T_pad·N (the
        # block multiplies it by T_pad), so it is scaled back to T·N here.
        def fetch(block):
            factors = (block._input_factor, block._output_factor)
            return [(f.get_cov(), f.get_cov_dt1()) for f in factors]

    with tf.Graph().as_default():
        lc, variables = _multi_use_model(x_np, params, approx)
        expected = _blocks(lc, variables, fetch)
    with tf.Graph().as_default():
        lc, variables = _multi_use_model(padded, params, approx, mask, mask_format)
        actual = _blocks(lc, variables, fetch)
    if approx == "kron_series_2":
        steps, padded_steps = x_np.shape[1], padded.shape[1]
        (input_moments, output_moments), rest = actual[0], actual[1:]
        output_moments = [m * padded_steps / steps for m in output_moments]
        actual = list(input_moments) + output_moments + rest
        expected = [m for pair in expected[0] for m in pair] + expected[1:]
    _assert_blocks_equal(actual, expected)


def test_padded_conv_examples_and_embedding_rows(rng):
    """`[batch]` masks of a convolution and of an embedding lookup: padded
    examples contribute nothing."""
    images = rng.randn(3, 4, 4, 2)
    ids = np.array([0, 3, 3])
    params = dict(kernel=rng.randn(3, 3, 2, 2), table=rng.randn(5, 2))

    def model(images_np, ids_np, mask=None):
        kernel = tf.get_variable("kernel", initializer=params["kernel"])
        table = tf.get_variable("table", initializer=params["table"])
        x = tf.constant(images_np)
        s = tf.nn.conv2d(x, kernel, [1, 1, 1, 1], "SAME")
        embedded = tf.gather(table, ids_np)
        f = tf.reduce_mean(tf.tanh(s), axis=[1, 2]) + embedded
        lc = kfac.LayerCollection()
        lc.register_conv2d(kernel, [1, 1, 1, 1], "SAME", x, s, mask=mask)
        lc.register_embedding(table, tf.constant(ids_np), embedded, mask=mask)
        lc.register_normal_predictive_distribution(f, weights=mask)
        return lc, [kernel, table]

    with tf.Graph().as_default():
        expected = _blocks(*model(images, ids))
    padded_images = np.concatenate([images, rng.randn(2, 4, 4, 2)])
    padded_ids = np.concatenate([ids, [1, 4]])
    mask = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
    with tf.Graph().as_default():
        actual = _blocks(*model(padded_images, padded_ids, mask))
    _assert_blocks_equal(actual, expected)


# ----------------------------------------------------------------------------
# A padded RNN batch: one optimizer step against numpy on the unpadded sequences

STEPS, BATCH, CLASSES, LR, DAMPING = 4, 4, 3, 0.25, 0.3


def _masked_rnn(problem, lengths, approx):
    """The tanh RNN of test_sequences_and_embeddings, padded to STEPS with the
    state carried over padded steps; returns (loss, lc, variables)."""
    variables = {
        name: tf.get_variable(name, initializer=tf.constant(problem[name]))
        for name in ("weights", "bias", "output_weights", "output_bias")
    }
    sequences = tf.constant(problem["sequences"])
    mask = tf.sequence_mask(lengths, STEPS, dtype=tf.float64)
    state = tf.zeros([BATCH, len(problem["bias"])], tf.float64)
    layer_inputs, preactivations = [], []
    for t in range(STEPS):
        layer_inputs.append(tf.concat([sequences[:, t], state], axis=1))
        preactivations.append(
            tf.matmul(layer_inputs[-1], variables["weights"]) + variables["bias"]
        )
        real = mask[:, t : t + 1]
        state = real * tf.tanh(preactivations[-1]) + (1 - real) * state
    logits = tf.matmul(state, variables["output_weights"]) + variables["output_bias"]
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.constant(problem["labels"]), logits=logits
        )
    )
    lc = kfac.LayerCollection()
    lc.register_fully_connected_multi(
        (variables["weights"], variables["bias"]),
        layer_inputs,
        preactivations,
        approx=approx,
        mask=mask,
    )
    lc.register_fully_connected(
        (variables["output_weights"], variables["output_bias"]), state, logits
    )
    lc.register_categorical_predictive_distribution(logits)
    return loss, lc, variables


def _numpy_sequence(problem, n, length):
    """Forward/backward of example `n` alone on its `length` real steps."""
    sequence = problem["sequences"][n : n + 1, :length]
    weights, output_weights = problem["weights"], problem["output_weights"]
    layer_inputs, states = references.rnn_forward(sequence, weights, problem["bias"])
    logits = states[-1] @ output_weights + problem["output_bias"]
    cotangent = references.loss_cotangent(logits, problem["labels"][n : n + 1])
    step_grads = references.rnn_backward(states, weights, cotangent @ output_weights.T)
    sources = references.exact_fisher_sources(logits)
    source_grads = [
        references.rnn_backward(states, weights, source @ output_weights.T)
        for source in sources
    ]
    return (
        layer_inputs,
        states[-1],
        logits,
        cotangent,
        step_grads,
        sources,
        source_grads,
    )


@pytest.mark.parametrize("approx", ["kron_indep", "kron_reduce"])
def test_padded_rnn_step_equals_numpy_on_the_unpadded_sequences(
    rng, tf_behavior, approx
):
    hidden, inputs = 3, 2
    problem = references.rnn_problem(rng, BATCH, STEPS, inputs, hidden, CLASSES)
    lengths = np.array([4, 2, 3, 1])
    # Garbage in the padding: it must not matter.
    for n, length in enumerate(lengths):
        problem["sequences"][n, length:] = 100.0 * rng.randn(STEPS - length, inputs)
    with tf.Graph().as_default():
        loss, lc, variables = _masked_rnn(problem, lengths, approx)
        before, after = session_helpers.one_exact_kfac_step(
            loss, lc, variables, LR, DAMPING, momentum=0.9
        )

    # numpy, every sequence on its own real steps only.
    per_example = [_numpy_sequence(problem, n, lengths[n]) for n in range(BATCH)]
    rnn_gradient = (
        sum(
            np.concatenate(
                [
                    sum(a.T @ g for a, g in zip(ins, grads)),
                    sum(g.sum(0, keepdims=True) for g in grads),
                ]
            )
            for ins, _, _, _, grads, _, _ in per_example
        )
        / BATCH
    )
    step_inputs = [references.with_ones(a) for ex in per_example for a in ex[0]]
    step_sources = [[g for g in source] for ex in per_example for source in ex[6]]
    num_real = int(lengths.sum())
    if approx == "kron_indep":
        # F ≈ (P/N)·A ⊗ G over the P real steps of the N sequences.
        input_cov = sum(a.T @ a for a in step_inputs) / num_real
        output_cov = sum(g.T @ g for source in step_sources for g in source) / num_real
        rnn_step = references.kron_step(
            input_cov, output_cov, rnn_gradient, DAMPING, num_real / BATCH
        )
    else:
        means = [
            np.mean([references.with_ones(a) for a in ex[0]], axis=0)
            for ex in per_example
        ]
        input_cov = sum(m.T @ m for m in means) / BATCH
        sums = [sum(grads) for ex in per_example for grads in ex[6]]
        output_cov = sum(s.T @ s for s in sums) / BATCH
        rnn_step = references.kron_step(input_cov, output_cov, rnn_gradient, DAMPING)
    last_states = np.concatenate([references.with_ones(ex[1]) for ex in per_example])
    cotangents = np.concatenate([ex[3] for ex in per_example]) / BATCH
    all_sources = [
        np.concatenate([ex[5][i] for ex in per_example]) for i in range(CLASSES)
    ]
    output_step = references.kron_step(
        last_states.T @ last_states / BATCH,
        sum(source.T @ source for source in all_sources) / BATCH,
        last_states.T @ cotangents,
        DAMPING,
    )
    changes = {name: before[name] - after[name] for name in before}
    np.testing.assert_allclose(changes["weights"], LR * rnn_step[:-1], rtol=1e-7)
    np.testing.assert_allclose(changes["bias"], LR * rnn_step[-1], rtol=1e-7)
    np.testing.assert_allclose(
        changes["output_weights"], LR * output_step[:-1], rtol=1e-7
    )
    np.testing.assert_allclose(changes["output_bias"], LR * output_step[-1], rtol=1e-7)


# ----------------------------------------------------------------------------
# Errors at registration


def test_weights_with_an_approximation_without_them_is_a_clear_error():
    with tf.Graph().as_default():
        x = tf.zeros([4, 3])
        w = tf.get_variable("w", [3, 2])
        lc = kfac.LayerCollection()
        with pytest.raises(
            ValueError, match="mask or weights cannot be used with approx='diagonal'"
        ):
            lc.register_fully_connected(
                w, x, tf.matmul(x, w), approx="diagonal", mask=np.ones(4)
            )


def test_bad_mask_shapes_and_values_are_clear_errors():
    with tf.Graph().as_default():
        x = tf.zeros([4, 5, 3])
        w = tf.get_variable("w", [3, 2])
        s = tf.einsum("bti,io->bto", x, w)
        lc = kfac.LayerCollection()
        with pytest.raises(
            ValueError,
            match=r"register_fully_connected: `mask` has "
            r"shape \(5,\)",
        ):
            lc.register_fully_connected(w, x, s, mask=np.ones(5))
        with pytest.raises(ValueError, match="`weights` must be non-negative"):
            lc.register_fully_connected(w, x, s, weights=-np.ones([4, 5]))
        uses = [tf.zeros([4, 3]) for _ in range(3)]
        with pytest.raises(ValueError, match="num_uses = 3"):
            lc.register_fully_connected_multi(
                w, uses, [tf.matmul(u, w) for u in uses], mask=np.ones([4, 2])
            )


def test_mask_with_sampled_conv_patches_is_a_clear_error():
    with tf.Graph().as_default():
        x = tf.zeros([2, 4, 4, 1])
        kernel = tf.get_variable("kernel", [3, 3, 1, 2])
        s = tf.nn.conv2d(x, kernel, [1, 1, 1, 1], "SAME")
        lc = kfac.LayerCollection()
        with pytest.raises(ValueError, match="cannot be combined with a mask"):
            lc.register_conv2d(
                kernel,
                [1, 1, 1, 1],
                "SAME",
                x,
                s,
                sub_sample_patches=True,
                mask=np.ones(2),
            )


def test_a_negative_fed_weight_fails_the_update_naming_it():
    with tf.Graph().as_default():
        x = tf.constant(np.ones([2, 3]))
        w = tf.get_variable("w", initializer=np.ones([3, 2]))
        weights = tf.placeholder(tf.float64, [2])
        s = tf.matmul(x, w)
        lc = kfac.LayerCollection()
        lc.register_fully_connected(w, x, s, weights=weights)
        lc.register_normal_predictive_distribution(s)
        fisher = estimator.make_fisher_estimator(
            variables=[w],
            layer_collection=lc,
            cov_ema_decay=0.0,
            damping=0.1,
            estimation_mode="exact",
        )
        cov_update_op = fisher.make_ops_and_vars()[0]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(cov_update_op, {weights: [1.0, 0.0]})
            with pytest.raises(
                tf.errors.InvalidArgumentError,
                match="register_fully_connected: `weights` must be "
                "finite and non-negative",
            ):
                sess.run(cov_update_op, {weights: [1.0, -1.0]})


def test_mask_and_weights_together_weight_by_their_product(rng):
    """`mask` and `weights` given together act as `mask ∘ weights`."""
    x_np = rng.randn(3, 4, IN)
    padded, mask = _padded(x_np, extra_steps=1, extra_examples=1, rng=rng)
    weights = rng.uniform(0.5, 2.0, size=mask.shape[0])
    params = _parameters()
    with tf.Graph().as_default():
        expected = _blocks(
            *_sequence_dense_model(
                padded, params, "kron", weights=mask * weights[:, None]
            )
        )
    with tf.Graph().as_default():
        actual = _blocks(
            *_sequence_dense_model(padded, params, "kron", mask=mask, weights=weights)
        )
    _assert_blocks_equal(actual, expected)
