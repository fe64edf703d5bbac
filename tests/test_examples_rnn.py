"""Tests for kfac/examples/rnn_mnist.py and kfac/examples/embedding_text.py.

Training runs use small generated data (short sequences, small vocabularies)
so that each stays within a few seconds; the numbers the optimizer produces
for these models are checked in test_sequences_and_embeddings.py.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from absl import flags

import kfac
from kfac.examples import embedding_text
from kfac.examples import rnn_mnist
from kfac.ops import fisher_blocks as fb


def _assert_loss_falls(losses, margin):
    """The mean loss of the last 3 steps is below the first loss by `margin`."""
    assert np.all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < losses[0] - margin, losses


def _small_sequences():
    return rnn_mnist.make_generated_data(
        num_train=192, num_test=128, num_steps=6, input_size=5, num_classes=4, seed=3
    )


# ----------------------------------------------------------------------------
# rnn_mnist


def test_rnn_layer_is_the_tanh_recursion_with_one_shared_matrix():
    rng = np.random.RandomState(0)
    sequences = rng.rand(4, 3, 2).astype(np.float32)
    with tf.Graph().as_default():
        last, inputs, preactivations, (weights, bias) = rnn_mnist.rnn_layer(
            tf.constant(sequences), hidden_size=5, seed=1
        )
        assert weights.op.name == "rnn/weights" and bias.op.name == "rnn/bias"
        assert weights.shape.as_list() == [7, 5] and bias.shape.as_list() == [5]
        assert len(inputs) == len(preactivations) == 3
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(bias.assign(np.arange(5, dtype=np.float32) / 10))
            w, b, last_value, pre_values = sess.run(
                [weights, bias, last, preactivations]
            )
    # The recurrent rows start orthogonal.
    np.testing.assert_allclose(w[2:].T @ w[2:], np.eye(5), atol=1e-5)
    state = np.zeros([4, 5])
    for t in range(3):
        pre = np.concatenate([sequences[:, t], state], axis=1) @ w + b
        np.testing.assert_allclose(pre_values[t], pre, rtol=1e-5, atol=1e-6)
        state = np.tanh(pre)
    np.testing.assert_allclose(last_value, state, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "approx, block_type",
    [
        ("kron_indep", fb.FullyConnectedMultiIndepFB),
        ("kron_expand", fb.FullyConnectedMultiIndepFB),
        ("kron_reduce", fb.FullyConnectedMultiReduceFB),
        ("kron_series_1", fb.FullyConnectedSeriesFB),
        ("kron_series_2", fb.FullyConnectedSeriesFB),
    ],
)
def test_build_model_registers_the_recurrent_layer_once_per_step(approx, block_type):
    with tf.Graph().as_default():
        sequences = tf.placeholder(tf.float32, [None, 4, 3])
        labels = tf.placeholder(tf.int64, [None])
        lc = kfac.LayerCollection()
        loss, accuracy, logits = rnn_mnist.build_model(
            sequences, labels, lc, hidden_size=6, approx=approx
        )
        rnn_block, output_block = lc.get_blocks()
        assert type(rnn_block) is block_type
        assert type(output_block) is fb.FullyConnectedKFACBasicFB
        weights, bias = [
            v for v in tf.trainable_variables() if v.op.name.startswith("rnn/")
        ]
        assert lc._get_use_count_map()[weights] == 4
        assert lc._get_use_count_map()[bias] == 4
        assert logits.shape.as_list() == [None, rnn_mnist.NUM_CLASSES]
        # Registration agrees with the graph: 4 reads of each RNN variable.
        lc.create_subgraph()
        lc.check_registration(tf.trainable_variables())


def test_build_model_and_train_reject_bad_choices():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="approx must be one of"):
            rnn_mnist.build_model(
                tf.zeros([2, 3, 4]),
                tf.zeros([2], tf.int64),
                kfac.LayerCollection(),
                approx="kron",
            )
    with pytest.raises(ValueError, match="optimizer must be one of.*'sgd'"):
        rnn_mnist.train(optimizer="sgd", data=_small_sequences())
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 192\].*500"):
        rnn_mnist.train(batch_size=500, num_steps=1, data=_small_sequences())


def test_generated_sequences_share_class_templates():
    train_x, train_y, test_x, test_y = _small_sequences()
    assert train_x.shape == (192, 6, 5) and test_x.shape == (128, 6, 5)
    assert train_x.dtype == np.float32 and train_y.dtype == np.int64
    assert 0 <= train_x.min() and train_x.max() <= 1
    # Nearest class mean (from the training split) classifies the test split.
    means = np.stack([train_x[train_y == c].mean(0) for c in range(4)])
    distances = ((test_x[:, None] - means[None]) ** 2).sum(axis=(2, 3))
    assert np.mean(np.argmin(distances, 1) == test_y) > 0.9


def _train_kfac(approx, **settings):
    """K-FAC on `_small_sequences()`, hidden size 12, batch 32, 15 steps of lr
    0.05 and damping 1 unless `settings` say otherwise."""
    defaults = dict(num_steps=15, learning_rate=0.05, damping=1.0)
    return rnn_mnist.train(
        optimizer="kfac",
        approx=approx,
        hidden_size=12,
        batch_size=32,
        data=_small_sequences(),
        log_every=0,
        **dict(defaults, **settings),
    )


@pytest.mark.parametrize(
    "approx", ["kron_indep", "kron_reduce", "kron_series_1", "kron_series_2"]
)
def test_kfac_training_reduces_the_loss(approx):
    result = _train_kfac(approx)
    assert len(result.train_losses) == 15
    _assert_loss_falls(result.train_losses, margin=0.5)
    assert np.isfinite(result.test_loss) and result.test_loss < result.train_losses[0]
    assert result.test_accuracy > 0.5  # chance: 0.25


@pytest.mark.parametrize("approx", ["kron_expand", "kron_reduce"])
def test_kfac_training_on_padded_sequences_reduces_the_loss(approx):
    # Lengths 3 to 6: the class must be read wherever each sequence stops.
    result = _train_kfac(
        approx, min_length=3, num_steps=20, learning_rate=0.1, damping=0.3
    )
    _assert_loss_falls(result.train_losses, margin=0.8)
    assert result.test_loss < np.log(4) and result.test_accuracy > 0.5  # chance


def test_adam_training_reduces_the_loss():
    result = rnn_mnist.train(
        optimizer="adam",
        hidden_size=12,
        batch_size=32,
        num_steps=15,
        learning_rate=0.02,
        data=_small_sequences(),
        log_every=0,
    )
    _assert_loss_falls(result.train_losses, margin=0.3)


def test_rnn_main_runs_from_flags(capsys):
    flag_values = flags.FlagValues()
    rnn_mnist.define_flags(flag_values)
    flag_values(
        [
            "rnn_mnist",
            "--use_fake_data",
            "--approx=kron_series_2",
            "--hidden_size=4",
            "--batch_size=16",
            "--num_steps=2",
            "--invert_every=1",
        ]
    )
    result = rnn_mnist.main([], flag_values)
    assert len(result.train_losses) == 2
    assert 0 <= result.test_accuracy <= 1
    assert "test accuracy" in capsys.readouterr().out


def test_rnn_main_reads_min_length(capsys):
    flag_values = flags.FlagValues()
    rnn_mnist.define_flags(flag_values)
    flag_values(
        [
            "rnn_mnist",
            "--use_fake_data",
            "--approx=kron_reduce",
            "--min_length=20",
            "--hidden_size=4",
            "--batch_size=16",
            "--num_steps=2",
        ]
    )
    assert flag_values.min_length == 20
    result = rnn_mnist.main([], flag_values)
    assert len(result.train_losses) == 2 and np.all(np.isfinite(result.train_losses))
    assert "test accuracy" in capsys.readouterr().out


# ----------------------------------------------------------------------------
# rnn_mnist: padded sequences (--min_length)


def test_random_lengths_are_seeded_and_zero_padding_clears_the_tail():
    lengths = rnn_mnist.random_lengths(500, 3, 6, seed=4)
    assert lengths.dtype == np.int32 and set(lengths) == {3, 4, 5, 6}
    np.testing.assert_array_equal(lengths, rnn_mnist.random_lengths(500, 3, 6, 4))
    sequences = np.random.RandomState(0).rand(4, 6, 2).astype(np.float32) + 1
    padded = rnn_mnist.zero_padding(sequences, np.array([6, 1, 3, 4]))
    assert padded.dtype == np.float32
    for example, length in enumerate([6, 1, 3, 4]):
        np.testing.assert_array_equal(
            padded[example, :length], sequences[example, :length]
        )
        np.testing.assert_array_equal(padded[example, length:], 0.0)


def test_pad_to_random_lengths_pads_both_splits_with_fixed_lengths():
    data = _small_sequences()
    padded, (train_lengths, test_lengths) = rnn_mnist.pad_to_random_lengths(data, 2)
    for x, y, lengths, original_x, original_y in (
        (padded[0], padded[1], train_lengths, data[0], data[1]),
        (padded[2], padded[3], test_lengths, data[2], data[3]),
    ):
        assert lengths.shape == (len(x),) and 2 <= lengths.min() < lengths.max() <= 6
        np.testing.assert_array_equal(x, rnn_mnist.zero_padding(original_x, lengths))
        np.testing.assert_array_equal(y, original_y)
    again = rnn_mnist.pad_to_random_lengths(data, 2)[1]
    np.testing.assert_array_equal(again[0], train_lengths)
    assert rnn_mnist.pad_to_random_lengths(data, 6) == (data, (None, None))


def test_masked_rnn_layer_keeps_the_state_of_the_last_real_row():
    rng = np.random.RandomState(1)
    sequences = rng.rand(3, 5, 2).astype(np.float32)
    lengths = np.array([5, 2, 1], np.int32)
    with tf.Graph().as_default():
        last, _, _, (weights, bias) = rnn_mnist.rnn_layer(
            tf.constant(sequences), hidden_size=4, seed=2, lengths=tf.constant(lengths)
        )
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            w, b, last_value = sess.run([weights, bias, last])
    for example, length in enumerate(lengths):
        state = np.zeros(4)
        for t in range(length):
            state = np.tanh(np.concatenate([sequences[example, t], state]) @ w + b)
        np.testing.assert_allclose(last_value[example], state, rtol=1e-5, atol=1e-6)


def test_padded_sequences_need_a_masked_approximation_and_the_hand_registration():
    with tf.Graph().as_default():
        lengths = tf.constant([2, 3])
        with pytest.raises(ValueError, match="approx of padded sequences"):
            rnn_mnist.build_model(
                tf.zeros([2, 3, 4]),
                tf.zeros([2], tf.int64),
                kfac.LayerCollection(),
                approx="kron_series_1",
                lengths=lengths,
            )
        with pytest.raises(ValueError, match="auto-registration cannot pass the mask"):
            rnn_mnist.build_model(
                tf.zeros([2, 3, 4]),
                tf.zeros([2], tf.int64),
                kfac.LayerCollection(),
                register_layers=False,
                lengths=lengths,
            )
    with pytest.raises(ValueError, match="min_length must be >= 1"):
        rnn_mnist.train(min_length=0, data=_small_sequences())


def _kfac_step(sequences, labels, lengths, approx, estimation_mode="gradients"):
    """One K-FAC step of the example's model with factors from this batch alone
    (as `train` starts): `(loss, factor covariances, parameter changes)`."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        lc = kfac.LayerCollection()
        loss, _, _ = rnn_mnist.build_model(
            tf.constant(sequences),
            tf.constant(labels),
            lc,
            hidden_size=5,
            approx=approx,
            num_classes=4,
            lengths=None if lengths is None else tf.constant(lengths),
        )
        optimizer = kfac.KfacOptimizer(
            learning_rate=0.1,
            cov_ema_decay=0.0,
            damping=0.1,
            layer_collection=lc,
            momentum=0.9,
            estimation_mode=estimation_mode,
        )
        (train_op, cov_update_op), inv_update_op = rnn_mnist._training.kfac_step_ops(
            optimizer, loss, tf.train.get_or_create_global_step()
        )
        variables = tf.trainable_variables()
        covariances = [factor.get_cov() for factor in lc.get_factors()]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            before = sess.run(variables)
            sess.run(cov_update_op)
            sess.run(inv_update_op)
            loss_value, factor_values, _ = sess.run([loss, covariances, train_op])
            after = sess.run(variables)
    return loss_value, factor_values, [a - b for a, b in zip(after, before)]


@pytest.mark.parametrize("approx", ["kron_expand", "kron_reduce"])
def test_masked_kfac_step_equals_the_step_without_the_padded_rows(approx):
    # Every example has 3 real rows of 5: the unpadded batch is [6, 3, 2].
    # "exact" estimation: no sampled targets, so the two graphs are comparable.
    rng = np.random.RandomState(5)
    sequences = rng.rand(6, 5, 2).astype(np.float32)
    labels = rng.randint(0, 4, 6).astype(np.int64)
    lengths = np.full([6], 3, np.int32)
    padded = _kfac_step(sequences, labels, lengths, approx, "exact")
    unpadded = _kfac_step(sequences[:, :3], labels, None, approx, "exact")
    np.testing.assert_allclose(padded[0], unpadded[0], rtol=1e-6)
    for padded_change, change in zip(padded[2], unpadded[2]):
        assert np.abs(change).max() > 1e-4
        np.testing.assert_allclose(padded_change, change, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("approx", ["kron_expand", "kron_reduce"])
def test_garbage_in_the_padded_rows_changes_neither_factors_nor_step(approx):
    rng = np.random.RandomState(6)
    lengths = np.array([5, 1, 3, 2, 4, 3], np.int32)
    sequences = rnn_mnist.zero_padding(rng.rand(6, 5, 2).astype(np.float32), lengths)
    labels = rng.randint(0, 4, 6).astype(np.int64)
    garbage = sequences + 10 * rng.randn(6, 5, 2).astype(np.float32) * (
        np.arange(5)[None, :, None] >= lengths[:, None, None]
    )
    assert not np.array_equal(garbage, sequences)
    clean_loss, clean_factors, clean_step = _kfac_step(
        sequences, labels, lengths, approx
    )
    loss, factors, step = _kfac_step(garbage, labels, lengths, approx)
    assert loss == clean_loss
    for value, clean_value in zip(factors + step, clean_factors + clean_step):
        np.testing.assert_allclose(value, clean_value, rtol=1e-6, atol=1e-7)
    # Unmasked, the same garbage reaches the recurrent layer's factors.
    _, unmasked_factors, _ = _kfac_step(garbage, labels, None, approx)
    _, clean_unmasked, _ = _kfac_step(sequences, labels, None, approx)
    assert not np.allclose(unmasked_factors[0], clean_unmasked[0])


# ----------------------------------------------------------------------------
# embedding_text

SMALL_TEXT = dict(vocab_size=200, num_classes=3)


def _small_text_data():
    return embedding_text.make_generated_data(
        num_train=512, num_test=256, sequence_length=6, seed=1, **SMALL_TEXT
    )


def test_generated_text_data_is_learnable_and_in_range():
    train_ids, train_labels, test_ids, test_labels = _small_text_data()
    assert train_ids.shape == (512, 6) and test_ids.shape == (256, 6)
    assert train_ids.dtype == np.int32 and train_labels.dtype == np.int64
    assert train_ids.min() >= 0 and train_ids.max() < 200
    # Zipf-like frequencies: the first tokens are far more frequent than the last.
    counts = np.bincount(train_ids.reshape(-1), minlength=200)
    assert counts[:20].sum() > 3 * counts[-20:].sum()
    # Per-token label votes learnt on the training split classify the test split.
    votes = np.zeros([200, 3])
    np.add.at(votes, (train_ids, train_labels[:, None]), 1.0)
    votes /= np.maximum(votes.sum(axis=1, keepdims=True), 1.0)
    predictions = np.argmax(votes[test_ids].sum(axis=1), axis=1)
    assert np.mean(predictions == test_labels) > 0.7  # chance: 1/3


@pytest.mark.parametrize("registration", ["bag", "multi"])
def test_embedding_gradient_stays_sparse_through_the_preconditioner(registration):
    with tf.Graph().as_default():
        model = embedding_text.build_training_graph(
            sequence_length=4, registration=registration, embedding_dim=5, **SMALL_TEXT
        )
        (block,) = [
            block
            for key, block in model.layer_collection.fisher_blocks.items()
            if key is model.embeddings
        ]
        expected = {
            "bag": fb.EmbeddingKFACFB,
            "multi": fb.EmbeddingKFACMultiIndepFB,
        }[registration]
        assert type(block) is expected
        uses = model.layer_collection._get_use_count_map()[model.embeddings]
        assert uses == (1 if registration == "bag" else 4)
        (gradient,) = [g for g, v in model.grads_and_vars if v is model.embeddings]
        assert isinstance(gradient, tf.IndexedSlices)
        preconditioned = model.optimizer._fisher_est.multiply_inverse(
            model.grads_and_vars
        )
        (step,) = [p for p, v in preconditioned if v is model.embeddings]
        assert isinstance(step, tf.IndexedSlices)
        # One row per gathered id, not the [vocab, dim] table.
        assert step.values.shape.as_list() == [None, 5]


@pytest.mark.parametrize("registration", ["bag", "multi"])
def test_embedding_training_reduces_the_loss(registration):
    result = embedding_text.train(
        registration=registration,
        batch_size=32,
        num_steps=30,
        data=_small_text_data(),
        embedding_dim=8,
        log_every=0,
        **SMALL_TEXT,
    )
    _assert_loss_falls(result.train_losses, margin=0.3)
    assert result.test_accuracy > 0.6  # chance: 1/3


def test_embedding_main_runs_from_flags(capsys):
    flag_values = flags.FlagValues()
    embedding_text.define_flags(flag_values)
    flag_values(["embedding_text", "--registration=multi", "--num_steps=2"])
    result = embedding_text.main([], flag_values)
    assert len(result.train_losses) == 2
    assert "test accuracy" in capsys.readouterr().out
