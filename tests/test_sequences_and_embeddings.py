"""Whole-optimizer tests for recurrent layers, embeddings and linked parameters.

Every test runs one real `KfacOptimizer` step with `estimation_mode="exact"` and
`cov_ema_decay=0`, so the factors equal their mini-batch statistics, and
compares the parameter change with `learning_rate × F̂⁻¹ g` computed in numpy
from scratch: forward pass, backpropagation through time, the exact-Fisher
sources (one per class: `dlogits_i = q_i (e_i − p)`, `q = √p`), the factor
statistics, the π-split damping and the block formulas of API.md §5.

Block-level checks of the same formulas live in test_fisher_blocks_multi.py;
here the registration, estimator and optimizer are in the loop.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import kfac
from kfac.ops import fisher_blocks as fb

LEARNING_RATE = 0.25
DAMPING = 0.3


# ----------------------------------------------------------------------------
# numpy references


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _loss_cotangent(logits, labels):
    """d(mean cross-entropy)/dlogits."""
    probs = _softmax(logits)
    probs[np.arange(len(labels)), labels] -= 1.0
    return probs / len(labels)


def _exact_fisher_sources(logits):
    """Per class `i`, rows `q_i (e_i − p)`: columns of the factor `B` (API.md §3)."""
    probs = _softmax(logits)
    sqrt_probs = np.sqrt(probs)
    eye = np.eye(logits.shape[1])
    return [sqrt_probs[:, [i]] * (eye[i] - probs) for i in range(logits.shape[1])]


def _with_ones(rows):
    return np.concatenate([rows, np.ones([len(rows), 1])], axis=1)


def _pi(input_cov, output_cov):
    """Trace-norm π (API.md §5); a 1-D `input_cov` is a diagonal."""
    input_trace = np.sum(input_cov) if input_cov.ndim == 1 else np.trace(input_cov)
    return np.sqrt(
        (input_trace / len(input_cov)) / (np.trace(output_cov) / len(output_cov))
    )


def _split_damping(input_cov, output_cov, damping):
    pi = _pi(input_cov, output_cov)
    return pi * np.sqrt(damping), np.sqrt(damping) / pi


def _kron_step(input_cov, output_cov, gradient, damping, num_uses=1):
    """`(n(A ⊗ G) + π-split damping)⁻¹ g` on the mat2d gradient, damping λ/n."""
    input_damping, output_damping = _split_damping(
        input_cov, output_cov, damping / num_uses
    )
    left = np.linalg.inv(input_cov + input_damping * np.eye(len(input_cov)))
    right = np.linalg.inv(output_cov + output_damping * np.eye(len(output_cov)))
    return left @ gradient @ right / num_uses


def _inverse_sqrt(matrix):
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return eigenvectors @ np.diag(eigenvalues**-0.5) @ eigenvectors.T


def _option1_quantities(cov0, cov1):
    """`(L, ψ)`: `Ψ = S sym(C₁) S = U diag(ψ) Uᵀ`, `L = S U`, `S = C₀^{-1/2}`.

    As `utils.posdef_eig`, the eigenvalues of Ψ are taken in absolute value.
    """
    whitening = _inverse_sqrt(cov0)
    psi, rotation = np.linalg.eigh(whitening @ ((cov1 + cov1.T) / 2) @ whitening)
    return whitening @ rotation, np.abs(psi)


def _option2_quantities(cov0, cov1):
    """`(P, K, μ)`: `P = C₁ᵀ C₀⁻¹`, `Ψ = S C₁ S = U diag(σ) Eᵀ`, `K = S E`, `μ = σ²`."""
    whitening = _inverse_sqrt(cov0)
    _, singular_values, right_t = np.linalg.svd(whitening @ cov1 @ whitening)
    return (
        cov1.T @ np.linalg.inv(cov0),
        whitening @ right_t.T,
        np.minimum(singular_values**2, 1.0),
    )


def _series_step(option, inputs, grads, gradient, damping):
    """Martens, Ba & Grosse (2018) options 1/2 on the mat2d gradient (API.md §5).

    Args:
      inputs, grads: per time step, `[B, in+1]` layer inputs (with ones) and
        `[B, out]` pre-activation gradients (for grads: a list over sources of
        such lists).
    """
    num_steps, batch = len(inputs), len(inputs[0])
    rows = num_steps * batch

    def moments(steps):
        cov0 = sum(step.T @ step for step in steps) / rows
        cov1 = sum(steps[t + 1].T @ steps[t] for t in range(num_steps - 1)) / rows
        return cov0, cov1

    input_cov0, input_cov1 = moments(inputs)
    source_moments = [moments(source) for source in grads]
    output_cov0 = sum(cov0 for cov0, _ in source_moments)
    output_cov1 = sum(cov1 for _, cov1 in source_moments)
    input_damping, output_damping = _split_damping(
        input_cov0, output_cov0, damping / num_steps
    )
    input_cov0 = input_cov0 + input_damping * np.eye(len(input_cov0))
    output_cov0 = output_cov0 + output_damping * np.eye(len(output_cov0))
    z = gradient.T  # [out, in+1]
    if option == 1:
        input_l, input_psi = _option1_quantities(input_cov0, input_cov1)
        output_l, output_psi = _option1_quantities(output_cov0, output_cov1)
        x = np.outer(output_psi, input_psi)
        gamma = (1 - x) ** 2 / (num_steps * (1 - x**2) - 2 * x * (1 - x**num_steps))
        z = output_l @ ((output_l.T @ z @ input_l) * gamma) @ input_l.T
    else:
        input_p, input_k, input_mu = _option2_quantities(input_cov0, input_cov1)
        output_p, output_k, output_mu = _option2_quantities(output_cov0, output_cov1)
        z = z - output_p @ z @ input_p.T
        z = output_k.T @ z @ input_k
        z = z / (1 - np.outer(output_mu, input_mu))
        z = output_k @ z @ input_k.T
        z = z - output_p.T @ z @ input_p
        z = z / num_steps
    return z.T


def _rnn_forward(sequences, weights, bias):
    """Layer inputs `[x_t, h_{t-1}]` and states `h_t` of the tanh RNN."""
    batch, hidden = len(sequences), len(bias)
    state = np.zeros([batch, hidden])
    layer_inputs, states = [], []
    for t in range(sequences.shape[1]):
        layer_inputs.append(np.concatenate([sequences[:, t], state], axis=1))
        state = np.tanh(layer_inputs[-1] @ weights + bias)
        states.append(state)
    return layer_inputs, states


def _rnn_backward(states, weights, state_cotangent):
    """Backpropagation through time: `dL/ds_t` for every step, from `dL/dh_{T-1}`."""
    input_size = len(weights) - weights.shape[1]
    preactivation_grads = [None] * len(states)
    cotangent = state_cotangent
    for t in reversed(range(len(states))):
        preactivation_grads[t] = cotangent * (1 - states[t] ** 2)
        cotangent = (preactivation_grads[t] @ weights.T)[:, input_size:]
    return preactivation_grads


# ----------------------------------------------------------------------------
# Recurrent layer registered with register_fully_connected_multi

NUM_STEPS, BATCH, INPUT_SIZE, HIDDEN, CLASSES = 3, 5, 2, 3, 3


def _rnn_problem(rng):
    return dict(
        sequences=rng.rand(BATCH, NUM_STEPS, INPUT_SIZE),
        labels=rng.randint(0, CLASSES, BATCH),
        weights=0.8 * rng.randn(INPUT_SIZE + HIDDEN, HIDDEN),
        bias=0.1 * rng.randn(HIDDEN),
        output_weights=rng.randn(HIDDEN, CLASSES),
        output_bias=0.1 * rng.randn(CLASSES),
    )


def _build_rnn(problem, approx, link):
    """The float64 RNN classifier, registered; returns (loss, lc, variables)."""
    variables = {
        name: tf.get_variable(name, initializer=tf.constant(problem[name]))
        for name in ("weights", "bias", "output_weights", "output_bias")
    }
    sequences = tf.constant(problem["sequences"])
    state = tf.zeros([BATCH, HIDDEN], tf.float64)
    layer_inputs, preactivations = [], []
    for t in range(NUM_STEPS):
        layer_inputs.append(tf.concat([sequences[:, t], state], axis=1))
        preactivations.append(
            tf.matmul(layer_inputs[-1], variables["weights"]) + variables["bias"]
        )
        state = tf.tanh(preactivations[-1])
    logits = tf.matmul(state, variables["output_weights"]) + variables["output_bias"]
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.constant(problem["labels"]), logits=logits
        )
    )
    lc = kfac.LayerCollection()
    rnn_params = (variables["weights"], variables["bias"])
    if link:
        lc.define_linked_parameters(rnn_params, approximation=approx)
        approx = None
    lc.register_fully_connected_multi(
        rnn_params, layer_inputs, preactivations, approx=approx
    )
    lc.register_fully_connected(
        (variables["output_weights"], variables["output_bias"]), state, logits
    )
    lc.register_categorical_predictive_distribution(logits)
    return loss, lc, variables


def _one_kfac_step(loss, lc, variables, momentum=0.9):
    """Runs cov update, inverse update, one training step; returns (before, after)."""
    optimizer = kfac.KfacOptimizer(
        LEARNING_RATE,
        0.0,
        DAMPING,
        lc,
        var_list=list(variables.values()),
        momentum=momentum,
        estimation_mode="exact",
    )
    _, cov_update_op, _, inv_update_op, _, _ = optimizer.make_ops_and_vars()
    train_op = optimizer.minimize(loss)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(cov_update_op)
        sess.run(inv_update_op)
        before = sess.run(variables)
        sess.run(train_op)
        after = sess.run(variables)
    return before, after


@pytest.mark.parametrize(
    "approx, link",
    [("kron_indep", False), ("kron_series_1", False), ("kron_series_2", True)],
)
def test_rnn_step_equals_numpy_preconditioned_gradient(rng, tf_behavior, approx, link):
    problem = _rnn_problem(rng)
    with tf.Graph().as_default():
        loss, lc, variables = _build_rnn(problem, approx, link)
        before, after = _one_kfac_step(loss, lc, variables)

    # numpy: forward, gradient of the mean cross-entropy, exact-Fisher sources.
    weights, bias = problem["weights"], problem["bias"]
    output_weights = problem["output_weights"]
    layer_inputs, states = _rnn_forward(problem["sequences"], weights, bias)
    logits = states[-1] @ output_weights + problem["output_bias"]
    logits_cotangent = _loss_cotangent(logits, problem["labels"])
    step_grads = _rnn_backward(states, weights, logits_cotangent @ output_weights.T)
    rnn_gradient = np.concatenate(
        [
            sum(a.T @ g for a, g in zip(layer_inputs, step_grads)),
            sum(g.sum(axis=0, keepdims=True) for g in step_grads),
        ]
    )
    sources = _exact_fisher_sources(logits)
    source_step_grads = [
        _rnn_backward(states, weights, source @ output_weights.T) for source in sources
    ]
    inputs_with_ones = [_with_ones(a) for a in layer_inputs]
    if approx == "kron_indep":
        input_cov = sum(a.T @ a for a in inputs_with_ones) / (NUM_STEPS * BATCH)
        output_cov = sum(g.T @ g for source in source_step_grads for g in source) / (
            NUM_STEPS * BATCH
        )
        rnn_step = _kron_step(input_cov, output_cov, rnn_gradient, DAMPING, NUM_STEPS)
    else:
        option = 1 if approx == "kron_series_1" else 2
        rnn_step = _series_step(
            option, inputs_with_ones, source_step_grads, rnn_gradient, DAMPING
        )

    last_states = _with_ones(states[-1])
    output_step = _kron_step(
        last_states.T @ last_states / BATCH,
        sum(source.T @ source for source in sources) / BATCH,
        np.concatenate(
            [states[-1].T @ logits_cotangent, logits_cotangent.sum(0)[None]]
        ),
        DAMPING,
    )

    def change(name):
        return before[name] - after[name]

    np.testing.assert_allclose(
        change("weights"), LEARNING_RATE * rnn_step[:-1], rtol=1e-7
    )
    np.testing.assert_allclose(change("bias"), LEARNING_RATE * rnn_step[-1], rtol=1e-7)
    np.testing.assert_allclose(
        change("output_weights"), LEARNING_RATE * output_step[:-1], rtol=1e-7
    )
    np.testing.assert_allclose(
        change("output_bias"), LEARNING_RATE * output_step[-1], rtol=1e-7
    )
    # The series steps differ from the independence step (time correlations matter).
    if approx != "kron_indep":
        indep = _kron_step(
            sum(a.T @ a for a in inputs_with_ones) / (NUM_STEPS * BATCH),
            sum(g.T @ g for s in source_step_grads for g in s) / (NUM_STEPS * BATCH),
            rnn_gradient,
            DAMPING,
            NUM_STEPS,
        )
        assert np.abs(rnn_step - indep).max() > 1e-3 * np.abs(indep).max()


@pytest.mark.parametrize(
    "approx, block_type, option",
    [
        ("kron_indep", fb.FullyConnectedMultiIndepFB, None),
        ("kron_series_1", fb.FullyConnectedSeriesFB, fb.SeriesFBApproximation.option1),
        ("kron_series_2", fb.FullyConnectedSeriesFB, fb.SeriesFBApproximation.option2),
    ],
)
def test_linked_group_chooses_the_multi_approximation(approx, block_type, option):
    with tf.Graph().as_default():
        weights, bias = tf.get_variable("w", [3, 2]), tf.get_variable("b", [2])
        inputs = [tf.zeros([4, 3]) for _ in range(NUM_STEPS)]
        outputs = [tf.matmul(x, weights) + bias for x in inputs]
        lc = kfac.LayerCollection()
        lc.define_linked_parameters((bias, weights), approximation=approx)
        lc.register_fully_connected_multi((weights, bias), inputs, outputs)
        (block,) = lc.get_blocks()
        assert type(block) is block_type
        if option is not None:
            assert block._option == option
        assert lc._get_use_count_map()[weights] == NUM_STEPS


# ----------------------------------------------------------------------------
# Linked parameters shared by two towers


def test_linked_weights_in_two_towers_make_one_block_and_one_step(rng, tf_behavior):
    """(w, b) linked as "diagonal", used by two towers: one diagonal block over
    both towers, and the step divides by the diagonal Fisher of the whole batch."""
    batch, inputs_size, classes = 3, 4, 3
    data = [rng.randn(batch, inputs_size) for _ in range(2)]
    labels = [rng.randint(0, classes, batch) for _ in range(2)]
    initial = rng.randn(inputs_size, classes), 0.1 * rng.randn(classes)
    with tf.Graph().as_default():
        lc = kfac.LayerCollection()
        tower_losses = []
        for tower in range(2):
            with tf.variable_scope("layer", reuse=tower > 0):
                weights = tf.get_variable(
                    "w", dtype=tf.float64, initializer=tf.constant(initial[0])
                )
                bias = tf.get_variable(
                    "b", dtype=tf.float64, initializer=tf.constant(initial[1])
                )
                if tower == 0:
                    lc.define_linked_parameters(
                        (weights, bias), approximation="diagonal"
                    )
                x = tf.constant(data[tower])
                logits = tf.matmul(x, weights) + bias
                lc.register_fully_connected((weights, bias), x, logits)
                lc.register_categorical_predictive_distribution(logits, name="logits")
                tower_losses.append(
                    tf.reduce_mean(
                        tf.nn.sparse_softmax_cross_entropy_with_logits(
                            labels=tf.constant(labels[tower]), logits=logits
                        )
                    )
                )
        (block,) = lc.get_blocks()
        assert type(block) is fb.FullyConnectedDiagonalFB
        assert block.num_registered_towers == 2
        assert lc._get_use_count_map()[weights] == 2
        before, after = _one_kfac_step(
            tf.add_n(tower_losses) / 2.0, lc, {"w": weights, "b": bias}
        )

    all_inputs = _with_ones(np.concatenate(data))
    all_logits = np.concatenate(data) @ initial[0] + initial[1]
    # The loss is the mean of the two towers' means = the mean over both.
    gradient = all_inputs.T @ _loss_cotangent(all_logits, np.concatenate(labels))
    diagonal = sum(
        (all_inputs**2).T @ source**2 for source in _exact_fisher_sources(all_logits)
    ) / len(all_inputs)
    step = gradient / (diagonal + DAMPING)
    np.testing.assert_allclose(
        before["w"] - after["w"], LEARNING_RATE * step[:-1], rtol=1e-7
    )
    np.testing.assert_allclose(
        before["b"] - after["b"], LEARNING_RATE * step[-1], rtol=1e-7
    )


def test_second_tower_contradicting_the_linked_approximation_is_rejected():
    with tf.Graph().as_default():
        weights = tf.get_variable("w", [2, 2])
        lc = kfac.LayerCollection()
        lc.define_linked_parameters(weights, approximation="diagonal")
        x = tf.zeros([3, 2])
        lc.register_fully_connected(weights, x, tf.matmul(x, weights))
        with pytest.raises(ValueError, match="existing FisherBlock has type"):
            lc.register_fully_connected(
                weights, x, tf.matmul(x, weights), approx="kron", reuse=True
            )
        # The failed registration left the block and the use count untouched.
        assert lc.fisher_blocks[weights].num_registered_towers == 1
        assert lc._get_use_count_map()[weights] == 1


@pytest.mark.parametrize(
    "registered, linked, new_group, fragment",
    [
        # A group overlapping a linked group without being contained in it.
        (None, ("w", "b"), ("b", "u"), "b:0 was already linked"),
        # A strict superset of a registered layer's parameters.
        (("w", "b"), None, ("w", "b", "u"), "was already registered"),
        # Only part of a registered layer's parameters.
        (("w", "b"), None, ("b",), "b:0 was already registered"),
    ],
)
def test_inconsistent_linked_groups_are_rejected(
    registered, linked, new_group, fragment
):
    with tf.Graph().as_default():
        variables = {name: tf.get_variable(name, [2]) for name in ("w", "b", "u")}
        lc = kfac.LayerCollection()
        if registered is not None:
            params = tuple(variables[name] for name in registered)
            lc.register_generic(params, batch_size=3)
        if linked is not None:
            lc.define_linked_parameters(tuple(variables[name] for name in linked))
        before = dict(lc.linked_parameters)
        with pytest.raises(ValueError, match=fragment):
            lc.define_linked_parameters(tuple(variables[name] for name in new_group))
        assert lc.linked_parameters == before


# ----------------------------------------------------------------------------
# Embeddings: sparse gradients through the optimizer


VOCAB, DIM, EMB_BATCH, EMB_CLASSES, IDS_PER_EXAMPLE = 7, 3, 4, 3, 2


@pytest.mark.parametrize("registration", ["embedding", "embedding_multi"])
def test_embedding_step_touches_only_gathered_rows(rng, tf_behavior, registration):
    ids = np.array([[0, 2], [2, 5], [5, 5], [0, 3]], np.int32)
    labels = rng.randint(0, EMB_CLASSES, EMB_BATCH)
    table = rng.randn(VOCAB, DIM).astype(np.float32)
    output_weights = rng.randn(DIM, EMB_CLASSES).astype(np.float32)
    recorded = []
    with tf.Graph().as_default():
        embeddings = tf.get_variable("table", initializer=tf.constant(table))
        weights = tf.get_variable("w", initializer=tf.constant(output_weights))
        lc = kfac.LayerCollection()
        ids_tensor = tf.constant(ids)
        if registration == "embedding":
            bag = tf.reduce_sum(tf.gather(embeddings, ids_tensor), axis=1)
            lc.register_embedding(embeddings, ids_tensor, bag)
        else:
            position_ids = tf.unstack(ids_tensor, axis=1)
            rows = [tf.gather(embeddings, position) for position in position_ids]
            bag = tf.add_n(rows)
            lc.register_embedding_multi(embeddings, position_ids, rows)
        logits = tf.matmul(bag, weights)
        lc.register_fully_connected(weights, bag, logits)
        lc.register_categorical_predictive_distribution(logits)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.constant(labels), logits=logits
            )
        )
        optimizer = kfac.KfacOptimizer(
            LEARNING_RATE, 0.0, DAMPING, lc, momentum=0.0, estimation_mode="exact"
        )
        estimator = optimizer._fisher_est
        multiply_inverse = estimator.multiply_inverse

        def recording_multiply_inverse(vecs_and_vars):
            result = multiply_inverse(vecs_and_vars)
            recorded.extend(result)
            return result

        estimator.multiply_inverse = recording_multiply_inverse
        _, cov_update_op, _, inv_update_op, _, _ = optimizer.make_ops_and_vars()
        grads_and_vars = optimizer.compute_gradients(loss)
        train_op = optimizer.apply_gradients(grads_and_vars)
        # The gather gradient and its preconditioned version stay sparse.
        (table_gradient,) = [g for g, v in grads_and_vars if v is embeddings]
        assert isinstance(table_gradient, tf.IndexedSlices)
        (table_step,) = [p for p, v in recorded if v is embeddings]
        assert isinstance(table_step, tf.IndexedSlices)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(cov_update_op)
            sess.run(inv_update_op)
            sess.run(train_op)
            new_table, new_weights = sess.run([embeddings, weights])

    # numpy, with num_uses n = 1 (bag of rows) or n = ids per example (one use
    # per position); the input factor is the id frequency per row of its input.
    bag_value = table[ids].sum(axis=1).astype(np.float64)
    logits_value = bag_value @ output_weights
    bag_cotangent = _loss_cotangent(logits_value, labels) @ output_weights.T
    table_gradient = np.zeros([VOCAB, DIM])
    for row, example_ids in enumerate(ids):
        for token in example_ids:
            table_gradient[token] += bag_cotangent[row]
    num_uses = 1 if registration == "embedding" else IDS_PER_EXAMPLE
    input_diag = np.bincount(ids.reshape(-1), minlength=VOCAB) / (num_uses * EMB_BATCH)
    sources = [
        source @ output_weights.T for source in _exact_fisher_sources(logits_value)
    ]
    # Each position's output gradient equals the bag's: averaged over uses.
    output_cov = sum(source.T @ source for source in sources) / EMB_BATCH
    input_damping, output_damping = _split_damping(
        input_diag, output_cov, DAMPING / num_uses
    )
    expected_step = (
        np.diag(1.0 / (input_diag + input_damping))
        @ table_gradient
        @ np.linalg.inv(output_cov + output_damping * np.eye(DIM))
        / num_uses
    )
    touched = np.unique(ids)
    untouched = np.setdiff1d(np.arange(VOCAB), touched)
    np.testing.assert_allclose(
        table[touched] - new_table[touched],
        LEARNING_RATE * expected_step[touched],
        rtol=2e-4,
        atol=1e-6,
    )
    np.testing.assert_array_equal(new_table[untouched], table[untouched])
    assert np.abs(table[touched] - new_table[touched]).min() > 0
    # The output layer (no bias) moved by its Kronecker step.
    output_step = _kron_step(
        bag_value.T @ bag_value / EMB_BATCH,
        sum(s.T @ s for s in _exact_fisher_sources(logits_value)) / EMB_BATCH,
        bag_value.T @ _loss_cotangent(logits_value, labels),
        DAMPING,
    )
    np.testing.assert_allclose(
        output_weights - new_weights, LEARNING_RATE * output_step, rtol=2e-4, atol=1e-6
    )
