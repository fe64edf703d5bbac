"""Tests for kfac/examples/mlp.py: layers, registration, and training runs."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf_root
import tensorflow.compat.v1 as tf
from example_helpers import assert_loss_falls
from example_helpers import parse_flags
from example_helpers import tower_devices
from summaries_helpers import read_scalars

import kfac
from kfac.examples import mlp

HAS_ESTIMATOR = hasattr(tf, "estimator")


def test_fc_layer_shapes_names_and_values():
    with tf.Graph().as_default():
        inputs = tf.constant(np.random.RandomState(0).randn(5, 3), tf.float32)
        pre, act, (kernel, bias) = mlp.fc_layer(
            layer_id=1, inputs=inputs, output_size=10
        )
        assert isinstance(kernel, tf_root.Variable) and isinstance(
            bias, tf_root.Variable
        )
        assert kernel.op.name == "fc_1/kernel" and bias.op.name == "fc_1/bias"
        assert pre.shape.as_list() == [5, 10] and act.shape.as_list() == [5, 10]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(bias.assign(np.arange(10, dtype=np.float32) / 10))
            x, w, b, pre_value, act_value = sess.run([inputs, kernel, bias, pre, act])
    assert w.shape == (3, 10) and b.shape == (10,)
    expected = np.array(
        [
            [sum(x[i, k] * w[k, j] for k in range(3)) + b[j] for j in range(10)]
            for i in range(5)
        ]
    )
    np.testing.assert_allclose(pre_value, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(act_value, np.tanh(expected), rtol=1e-5, atol=1e-6)
    # Standard-normal initializer, as the original's Dense layer.
    assert 0.3 < w.std() < 2.0


def _numpy_mlp_loss_and_accuracy(x, labels, params):
    activations = x
    for i, (w, b) in enumerate(params):
        pre = activations @ w + b
        activations = np.tanh(pre) if i < len(params) - 1 else pre
    logits = activations - activations.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    loss = -np.mean(log_probs[np.arange(len(labels)), labels])
    accuracy = np.mean(np.argmax(activations, axis=1) == labels)
    return loss, accuracy


def test_build_model_registers_layers_and_computes_loss():
    rng = np.random.RandomState(1)
    x_value = rng.rand(6, 784).astype(np.float32)
    y_value = rng.randint(0, 10, 6).astype(np.int64)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 784])
        y = tf.placeholder(tf.int64, [None])
        layer_collection = kfac.LayerCollection()
        loss, accuracy = mlp.build_model(x, y, 10, layer_collection)

        blocks = list(layer_collection.get_blocks())
        assert len(blocks) == 4
        assert all(
            isinstance(block, kfac.fisher_blocks.FullyConnectedKFACBasicFB)
            for block in blocks
        )
        assert len(layer_collection.losses) == 1
        assert isinstance(
            layer_collection.losses[0],
            kfac.loss_functions.CategoricalLogitsNegativeLogProbLoss,
        )
        params = [
            (v, w)
            for v, w in zip(
                tf.trainable_variables()[::2], tf.trainable_variables()[1::2]
            )
        ]
        assert [p[0].shape.as_list() for p in params] == [
            [784, 128],
            [128, 64],
            [64, 32],
            [32, 10],
        ]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = sess.run([loss, accuracy, params], {x: x_value, y: y_value})
    expected_loss, expected_accuracy = _numpy_mlp_loss_and_accuracy(
        x_value, y_value, values[2]
    )
    np.testing.assert_allclose(values[0], expected_loss, rtol=1e-4)
    np.testing.assert_allclose(values[1], expected_accuracy)


def test_train_mnist_loss_falls_on_fake_data(tf_behavior):
    history = []
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        accuracy = mlp.train_mnist(
            None,
            num_epochs=4,
            use_fake_data=True,
            batch_size=32,
            history=history,
            log_every=0,
        )
    # 4 batches per epoch of 4·32 fake examples.
    assert [stats.step for stats in history] == list(range(16))
    assert accuracy == history[-1].accuracy
    assert_loss_falls(history, margin=1.0)


def test_build_towers_shares_variables_and_registers_towers():
    with tf.Graph().as_default():
        examples = tf.zeros([8, 784])
        labels = tf.zeros([8], tf.int64)
        layer_collection = kfac.LayerCollection()
        loss, accuracy = mlp.build_towers(
            mlp.build_model, examples, labels, 2, layer_collection
        )
        assert len(tf.trainable_variables()) == 8
        assert [
            block.num_registered_towers for block in layer_collection.get_blocks()
        ] == [2] * 4
        assert [len(towers) for towers in layer_collection.towers_by_loss] == [1 * 2]
        tower1_ops = [
            op
            for op in tf.get_default_graph().get_operations()
            if op.name.startswith("tower1/fc_0/")
        ]
        assert tower1_ops and all(
            op.device == "/device:CPU:1"
            for op in tower1_ops
            if op.type != "ReadVariableOp"
        )  # colocated with variables
        assert loss.shape.as_list() == [] and accuracy.shape.as_list() == []


def test_train_mnist_multitower_runs_on_two_cpus():
    history = []
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        mlp.train_mnist_multitower(
            None,
            num_epochs=4,
            num_towers=2,
            use_fake_data=True,
            batch_size=16,
            history=history,
            log_every=0,
        )
        graph = tf.get_default_graph()
    assert tower_devices(graph) == {"/device:CPU:0", "/device:CPU:1"}
    assert len(history) == 16
    assert_loss_falls(history, margin=1.0)


@pytest.mark.skipif(
    not HAS_ESTIMATOR, reason="tf.estimator was removed in TensorFlow 2.16"
)
def test_train_mnist_estimator_loss_falls(tmp_path):
    history = []
    with tf.Graph().as_default():
        accuracy = mlp.train_mnist_estimator(
            None,
            num_epochs=4,
            use_fake_data=True,
            batch_size=32,
            history=history,
            model_dir=str(tmp_path),
            tf_random_seed=0,
        )
    assert len(history) == 16
    assert accuracy == history[-1].accuracy
    assert_loss_falls(history, margin=1.0)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-16")
    # The optimizer's summaries are in the model_dir's events.
    values = read_scalars(str(tmp_path))
    assert values["kfac/learning_rate"] == pytest.approx(mlp.LEARNING_RATE)
    assert values["kfac/fc_1/kernel/input_factor/condition_number"] >= 1.0


@pytest.mark.skipif(HAS_ESTIMATOR, reason="tf.estimator exists in this TensorFlow")
def test_train_mnist_estimator_without_estimator_says_why():
    with pytest.raises(
        RuntimeError, match="tf.estimator, which TensorFlow removed in 2.16"
    ):
        mlp.train_mnist_estimator(None, num_epochs=1, use_fake_data=True)


def _parse_flags(argv):
    return parse_flags(mlp, argv)


def test_main_trains_on_fake_data_with_flags(capsys):
    flag_values = _parse_flags(["--use_fake_data", "--num_epochs=1", "--num_steps=2"])
    assert flag_values.data_dir == "/usr/share/datasets/fashion-mnist"
    assert flag_values.num_towers == 1 and not flag_values.use_estimator
    # Called from eager mode, as a script is: main builds its own graph.
    accuracy = mlp.main([], flag_values=flag_values)
    assert 0.0 <= accuracy <= 1.0
    assert "final mini-batch accuracy: %s" % accuracy in capsys.readouterr().out


def test_main_writes_tensorboard_logs(tmp_path):
    flag_values = _parse_flags(
        ["--use_fake_data", "--num_epochs=1", "--num_steps=3",
         "--logdir=%s" % tmp_path]
    )
    mlp.main([], flag_values=flag_values)
    (run_dir,) = glob.glob(os.path.join(str(tmp_path), "mlp", "*"))
    values = read_scalars(run_dir)
    assert {"loss", "accuracy", "kfac/damping"} <= set(values)
    assert values["kfac/damping"] == pytest.approx(mlp.DAMPING)


@pytest.mark.parametrize(
    "extra, function, expected_args",
    [
        ([], "train_mnist", ("/d", 3)),
        (["--num_towers=2"], "train_mnist_multitower", ("/d", 3, 2)),
        (["--use_estimator"], "train_mnist_estimator", ("/d", 3)),
    ],
)
def test_main_dispatches_flags(monkeypatch, extra, function, expected_args):
    calls = []
    monkeypatch.setattr(
        mlp, function, lambda *args, **kwargs: calls.append((args, kwargs))
    )
    flag_values = _parse_flags(
        [
            "--data_dir=/d",
            "--num_epochs=3",
            "--num_steps=7",
            "--batch_size=5",
            "--use_fake_data",
        ]
        + extra
    )
    mlp.main([], flag_values=flag_values)
    assert calls == [
        (
            expected_args,
            dict(
                use_fake_data=True,
                batch_size=5,
                num_steps=7,
                auto_register=True,
                logdir=None,
            ),
        )
    ]


def test_main_rejects_estimator_with_towers():
    flag_values = _parse_flags(["--use_estimator", "--num_towers=2"])
    with pytest.raises(ValueError, match="one tower only, got --num_towers=2"):
        mlp.main([], flag_values=flag_values)


def test_main_missing_data_dir_says_how_to_get_data(tmp_path):
    flag_values = _parse_flags(["--data_dir=%s" % (tmp_path / "none")])
    with pytest.raises(
        FileNotFoundError, match="apt-get install dataset-fashion-mnist"
    ):
        mlp.main([], flag_values=flag_values)
