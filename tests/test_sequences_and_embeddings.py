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
import sequence_references as references
import session_helpers
import tensorflow.compat.v1 as tf

import kfac
from kfac.ops import fisher_blocks as fb

LEARNING_RATE = 0.25
DAMPING = 0.3


# ----------------------------------------------------------------------------
# Recurrent layer registered with register_fully_connected_multi

NUM_STEPS, BATCH, INPUT_SIZE, HIDDEN, CLASSES = 3, 5, 2, 3, 3


def _rnn_problem(rng):
    return references.rnn_problem(rng, BATCH, NUM_STEPS, INPUT_SIZE, HIDDEN, CLASSES)


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
    return session_helpers.one_exact_kfac_step(
        loss, lc, variables, LEARNING_RATE, DAMPING, momentum
    )


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
    layer_inputs, states = references.rnn_forward(problem["sequences"], weights, bias)
    logits = states[-1] @ output_weights + problem["output_bias"]
    logits_cotangent = references.loss_cotangent(logits, problem["labels"])
    step_grads = references.rnn_backward(
        states, weights, logits_cotangent @ output_weights.T
    )
    rnn_gradient = np.concatenate(
        [
            sum(a.T @ g for a, g in zip(layer_inputs, step_grads)),
            sum(g.sum(axis=0, keepdims=True) for g in step_grads),
        ]
    )
    sources = references.exact_fisher_sources(logits)
    source_step_grads = [
        references.rnn_backward(states, weights, source @ output_weights.T)
        for source in sources
    ]
    inputs_with_ones = [references.with_ones(a) for a in layer_inputs]
    if approx == "kron_indep":
        input_cov = sum(a.T @ a for a in inputs_with_ones) / (NUM_STEPS * BATCH)
        output_cov = sum(g.T @ g for source in source_step_grads for g in source) / (
            NUM_STEPS * BATCH
        )
        rnn_step = references.kron_step(
            input_cov, output_cov, rnn_gradient, DAMPING, NUM_STEPS
        )
    else:
        option = 1 if approx == "kron_series_1" else 2
        rnn_step = references.series_step(
            option, inputs_with_ones, source_step_grads, rnn_gradient, DAMPING
        )

    last_states = references.with_ones(states[-1])
    output_step = references.kron_step(
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
        indep = references.kron_step(
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

    all_inputs = references.with_ones(np.concatenate(data))
    all_logits = np.concatenate(data) @ initial[0] + initial[1]
    # The loss is the mean of the two towers' means = the mean over both.
    gradient = all_inputs.T @ references.loss_cotangent(
        all_logits, np.concatenate(labels)
    )
    diagonal = sum(
        (all_inputs**2).T @ source**2
        for source in references.exact_fisher_sources(all_logits)
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
    bag_cotangent = references.loss_cotangent(logits_value, labels) @ output_weights.T
    table_gradient = np.zeros([VOCAB, DIM])
    for row, example_ids in enumerate(ids):
        for token in example_ids:
            table_gradient[token] += bag_cotangent[row]
    num_uses = 1 if registration == "embedding" else IDS_PER_EXAMPLE
    input_diag = np.bincount(ids.reshape(-1), minlength=VOCAB) / (num_uses * EMB_BATCH)
    sources = [
        source @ output_weights.T
        for source in references.exact_fisher_sources(logits_value)
    ]
    # Each position's output gradient equals the bag's: averaged over uses.
    output_cov = sum(source.T @ source for source in sources) / EMB_BATCH
    input_damping, output_damping = references.split_damping(
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
    output_step = references.kron_step(
        bag_value.T @ bag_value / EMB_BATCH,
        sum(s.T @ s for s in references.exact_fisher_sources(logits_value)) / EMB_BATCH,
        bag_value.T @ references.loss_cotangent(logits_value, labels),
        DAMPING,
    )
    np.testing.assert_allclose(
        output_weights - new_weights, LEARNING_RATE * output_step, rtol=2e-4, atol=1e-6
    )
