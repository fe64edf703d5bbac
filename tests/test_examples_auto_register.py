"""Every example trains the same with `auto_register` as with its hand registrations.

Each example runs a few steps twice from the same seed on the same generated
data: with the hand registrations of its model code and with
`auto_register=True` (the model registers its loss only and
`LayerCollection.auto_register_layers()` registers the layers once the whole
model is built). The loss histories must agree to 1e-5 relative: any
difference in the blocks (kind, inputs, outputs, uses, towers) would change
the preconditioned steps and so the losses after the first step.
"""

import dataclasses
import functools
import inspect
import logging

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from example_helpers import parse_flags
from example_helpers import queue_fed_losses

import kfac
from kfac.examples import _cli
from kfac.examples import _training
from kfac.examples import autoencoder_mnist as ae
from kfac.examples import convnet
from kfac.examples import embedding_text
from kfac.examples import mlp
from kfac.examples import quickstart
from kfac.examples import rnn_mnist

RTOL = 1e-5
HAS_ESTIMATOR = hasattr(tf, "estimator")


def assert_same_history(hand, auto, num_steps):
    """Same losses to `RTOL`, `num_steps` of them, and training moved them."""
    hand, auto = np.asarray(hand, np.float64), np.asarray(auto, np.float64)
    assert len(hand) == len(auto) == num_steps
    assert np.all(np.isfinite(hand))
    assert np.max(np.abs(np.diff(hand))) > 1e-3  # the weights changed
    np.testing.assert_allclose(auto, hand, rtol=RTOL, atol=0)


QUEUE_FED = {
    "mlp": (mlp.train_mnist, dict(invert_every=2, log_every=0)),
    "mlp_towers": (
        functools.partial(mlp.train_mnist_multitower, num_towers=2),
        dict(invert_every=2, log_every=0),
    ),
    "convnet": (
        convnet.train_mnist_single_machine,
        dict(invert_every=2, log_every=0, learning_rate=0.3),
    ),
    "convnet_towers": (
        functools.partial(convnet.train_mnist_multitower, num_towers=2),
        dict(invert_every=2, log_every=0, learning_rate=0.3),
    ),
    "convnet_distributed": (
        functools.partial(convnet.train_mnist_distributed, 0, 1, 0, ""),
        dict(invert_every=2, log_every=0, learning_rate=0.3),
    ),
}


@pytest.mark.parametrize("example", sorted(QUEUE_FED))
def test_queue_fed_examples_train_the_same(example):
    train_fn, kwargs = QUEUE_FED[example]
    hand = queue_fed_losses(train_fn, auto_register=False, **kwargs)
    auto = queue_fed_losses(train_fn, auto_register=True, **kwargs)
    assert_same_history(hand, auto, num_steps=8)


@pytest.mark.skipif(not HAS_ESTIMATOR, reason="tf.estimator is gone (TF >= 2.16)")
def test_mlp_estimator_trains_the_same(tmp_path):
    def losses(auto_register):
        history = []
        with tf.Graph().as_default():
            mlp.train_mnist_estimator(
                None,
                2,
                use_fake_data=True,
                batch_size=8,
                history=history,
                model_dir=str(tmp_path / str(auto_register)),
                tf_random_seed=0,
                auto_register=auto_register,
            )
        return [stats.loss for stats in history]

    assert_same_history(losses(False), losses(True), num_steps=8)


# Sequences of 6 steps of 5 inputs, a state of 8: the RNN in miniature.
RNN_OPTIONS = dict(
    hidden_size=8,
    batch_size=16,
    num_steps=8,
    log_every=0,
    data=rnn_mnist.make_generated_data(
        num_train=64, num_test=32, num_steps=6, input_size=5
    ),
)


@pytest.mark.parametrize("approx", rnn_mnist.APPROXIMATIONS)
def test_rnn_trains_the_same(approx):
    def losses(auto_register):
        options = dict(RNN_OPTIONS, approx=approx, auto_register=auto_register)
        return rnn_mnist.train(**options).train_losses

    assert_same_history(losses(False), losses(True), num_steps=8)


EMBEDDING_SIZES = dict(vocab_size=50, embedding_dim=5, num_classes=3)
EMBEDDING_DATA = embedding_text.make_generated_data(
    num_train=128, num_test=64, sequence_length=4, vocab_size=50, num_classes=3
)


def embedding_losses(registration, auto_register, num_steps=8):
    """`embedding_text.train`'s schedule, with the covariance update in a run
    of its own: run together with the training op, it races with the update
    of the table (the losses then differ between two identical runs)."""
    train_ids, train_labels = EMBEDDING_DATA[:2]
    rng = np.random.RandomState(0)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        model = embedding_text.build_training_graph(
            sequence_length=4,
            registration=registration,
            auto_register=auto_register,
            **EMBEDDING_SIZES,
        )

        def feed():
            indices = rng.randint(0, len(train_ids), 16)
            return {model.ids: train_ids[indices], model.labels: train_labels[indices]}

        losses = []
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(model.cov_update_op, {**feed(), model.cov_decay: 0.0})
            sess.run(model.inv_update_op)
            for step in range(num_steps):
                batch = feed()
                losses.append(sess.run([model.loss, model.train_op], batch)[0])
                sess.run(model.cov_update_op, batch)
                if step % 2 == 1:
                    sess.run(model.inv_update_op)
    return losses


@pytest.mark.parametrize("registration", embedding_text.REGISTRATIONS)
def test_embedding_trains_the_same(registration):
    assert_same_history(
        embedding_losses(registration, False),
        embedding_losses(registration, True),
        num_steps=8,
    )


@pytest.mark.parametrize("registration", embedding_text.REGISTRATIONS)
def test_embedding_train_runs_with_auto_register(registration):
    result = embedding_text.train(
        registration=registration,
        batch_size=16,
        num_steps=4,
        data=EMBEDDING_DATA,
        log_every=0,
        auto_register=True,
        **EMBEDDING_SIZES,
    )
    assert len(result.train_losses) == 4
    assert np.all(np.isfinite(result.train_losses))


AE_SETTINGS = ae.TrainSettings(
    batch_size=32, max_steps=8, eval_every=1, seed=3, layer_sizes=(12, 8, 4, 8, 12)
)
AE_SPECS = {
    "kfac": ae.OptimizerSpec("kfac", 0.1, damping=0.1, inv_update_every=3),
    "kfac_qmodel": ae.OptimizerSpec(
        "kfac_qmodel", 1.0, damping=1.0, momentum=0.0, inv_update_every=3
    ),
}


@pytest.mark.parametrize("kind", sorted(AE_SPECS))
def test_autoencoder_trains_the_same(kind):
    images = ae.make_fake_images(128, input_size=16)

    def losses(auto_register):
        settings = dataclasses.replace(AE_SETTINGS, auto_register=auto_register)
        record = ae.train_one(AE_SPECS[kind], settings, images, images[:64])
        return [evaluation["loss"] for evaluation in record["evals"]]

    assert_same_history(losses(False), losses(True), num_steps=9)


def test_quickstart_trains_the_same():
    hand = quickstart.main(num_steps=10, print_every=0)
    auto = quickstart.main(num_steps=10, print_every=0, auto_register=True)
    assert_same_history(hand, auto, num_steps=10)


def test_auto_register_logs_one_line_per_registration(caplog):
    with tf.Graph().as_default():
        examples = tf.placeholder(tf.float32, [4, 784])
        labels = tf.placeholder(tf.int64, [4])
        layer_collection = kfac.LayerCollection()
        mlp.build_model(examples, labels, 10, layer_collection, register_layers=False)
        assert not layer_collection.fisher_blocks  # the loss only
        with caplog.at_level(logging.INFO, logger="tensorflow"):
            registrations = _training.auto_register_layers(layer_collection)
    assert [r.kind for r in registrations] == ["fully_connected"] * 4
    lines = [
        record.getMessage()
        for record in caplog.records
        if record.name == "tensorflow" and "auto_register:" in record.getMessage()
    ]
    assert sorted(lines) == [
        "auto_register: fc_%d/kernel, fc_%d/bias -> fully_connected "
        "(MatMul + BiasAdd), 1 use(s) per tower, 1 tower(s)" % (layer, layer)
        for layer in range(4)
    ]


FLAG_EXAMPLES = [mlp, convnet, rnn_mnist, embedding_text, ae, quickstart]


@pytest.mark.parametrize("example", FLAG_EXAMPLES, ids=lambda m: m.__name__)
def test_auto_register_flag_defaults_to_on_and_can_be_turned_off(example):
    assert parse_flags(example, []).auto_register is True
    assert parse_flags(example, ["--noauto_register"]).auto_register is False
    assert parse_flags(example, ["--auto_register"]).auto_register is True


@pytest.mark.parametrize("argv, expected", [([], True), (["--noauto_register"], False)])
def test_mlp_main_passes_the_flag(monkeypatch, argv, expected):
    calls = []
    monkeypatch.setattr(
        mlp, "train_mnist", lambda *args, **kwargs: calls.append(kwargs) or 0.5
    )
    mlp.main([], flag_values=parse_flags(mlp, ["--use_fake_data"] + argv))
    assert [kwargs["auto_register"] for kwargs in calls] == [expected]


@pytest.mark.parametrize("argv, expected", [([], True), (["--noauto_register"], False)])
def test_flag_reaches_the_autoencoder_settings(argv, expected):
    settings = ae.settings_from_flags(parse_flags(ae, argv))
    assert settings.auto_register is expected


@pytest.mark.parametrize(
    "example", [rnn_mnist, embedding_text], ids=lambda m: m.__name__
)
def test_train_takes_every_flag_of_main(example):
    flag_values = parse_flags(example, ["--noauto_register"])
    kwargs = _cli.flag_kwargs(example.FLAGS_TABLE, flag_values)
    assert kwargs["auto_register"] is False
    inspect.signature(example.train).bind(**kwargs)  # main calls train(**kwargs)
