"""Tests for kfac/examples/convnet.py: layers, roles, and training runs."""

import os

import numpy as np
import pytest
import tensorflow as tf_root
import tensorflow.compat.v1 as tf
from absl import flags

import kfac
from kfac.examples import convnet
from kfac.examples import mnist


def _assert_loss_falls(history, margin):
    """The mean loss of the last 3 steps is below the first loss by `margin`."""
    losses = [stats.loss for stats in history]
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < losses[0] - margin, losses


# When a SyncReplicasOptimizer session closes, the chief's token queue runner
# is cancelled while it waits for the next step's gradients; TensorFlow lets
# that CancelledError end its thread, which pytest reports as a warning.
# The thread may end during a later test, so the filter covers the module.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnhandledThreadExceptionWarning"
)


def _numpy_conv_same(x, w):
    """Stride-1 SAME convolution (cross-correlation) by explicit loops."""
    batch, height, width, _ = x.shape
    kernel, _, _, out_channels = w.shape
    pad = (kernel - 1) // 2
    padded = np.pad(
        x, [(0, 0), (pad, kernel - 1 - pad), (pad, kernel - 1 - pad), (0, 0)]
    )
    out = np.zeros([batch, height, width, out_channels])
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                patch = padded[b, i : i + kernel, j : j + kernel, :]
                for c in range(out_channels):
                    out[b, i, j, c] = np.sum(patch * w[..., c])
    return out


def test_conv_layer_shapes_names_and_values():
    rng = np.random.RandomState(0)
    with tf.Graph().as_default():
        inputs = tf.constant(rng.randn(5, 3, 3, 2), tf.float32)
        pre, act, (kernel, bias) = convnet.conv_layer(
            layer_id=1, inputs=inputs, kernel_size=3, out_channels=5
        )
        assert kernel.op.name == "conv_1/kernel" and bias.op.name == "conv_1/bias"
        assert isinstance(kernel, tf_root.Variable) and isinstance(
            bias, tf_root.Variable
        )
        assert pre.shape.as_list() == [5, 3, 3, 5] and act.shape.as_list() == [
            5,
            3,
            3,
            5,
        ]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            initial_kernel = sess.run(kernel)
            sess.run([kernel.assign(rng.randn(3, 3, 2, 5)), bias.assign(rng.randn(5))])
            x, w, b, pre_value, act_value = sess.run([inputs, kernel, bias, pre, act])
    assert 0.003 < initial_kernel.std() < 0.03  # normal(stddev=0.01)
    expected = _numpy_conv_same(x, w) + b
    np.testing.assert_allclose(pre_value, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(act_value, np.maximum(expected, 0), rtol=1e-5, atol=1e-5)


def test_max_pool_layer_name_shape_and_values():
    x = np.random.RandomState(0).randn(2, 6, 6, 2).astype(np.float32)
    with tf.Graph().as_default():
        act = convnet.max_pool_layer(
            layer_id=1, inputs=tf.constant(x), kernel_size=5, stride=3
        )
        assert act.op.name == "pool_1/pool"
        assert act.shape.as_list() == [2, 2, 2, 2]
        with tf.Session() as sess:
            value = sess.run(act)
    # SAME padding: output 2x2 of 5x5 windows starting at -1 (pad 1 before, 2 after).
    for i in range(2):
        for j in range(2):
            rows = slice(max(3 * i - 1, 0), 3 * i + 4)
            cols = slice(max(3 * j - 1, 0), 3 * j + 4)
            np.testing.assert_array_equal(
                value[:, i, j], x[:, rows, cols].max(axis=(1, 2))
            )


def test_linear_layer_is_affine():
    x = np.random.RandomState(0).randn(5, 20).astype(np.float32)
    with tf.Graph().as_default():
        pre, (kernel, bias) = convnet.linear_layer(
            layer_id=1, inputs=tf.constant(x), output_size=5
        )
        assert kernel.op.name == "fc_1/kernel" and bias.op.name == "fc_1/bias"
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(bias.assign([1.0, 2.0, 3.0, 4.0, 5.0]))
            w, b, value = sess.run([kernel, bias, pre])
    np.testing.assert_allclose(value, x @ w + b, rtol=1e-5, atol=1e-5)


def _numpy_max_pool_same(x, kernel, stride):
    """SAME max-pooling by explicit loops (padding never wins the max)."""
    batch, height, width, channels = x.shape
    out_height, out_width = -(-height // stride), -(-width // stride)
    pad_rows = max((out_height - 1) * stride + kernel - height, 0) // 2
    pad_cols = max((out_width - 1) * stride + kernel - width, 0) // 2
    out = np.zeros([batch, out_height, out_width, channels])
    for i in range(out_height):
        for j in range(out_width):
            rows = slice(max(i * stride - pad_rows, 0), i * stride - pad_rows + kernel)
            cols = slice(max(j * stride - pad_cols, 0), j * stride - pad_cols + kernel)
            out[:, i, j] = x[:, rows, cols].max(axis=(1, 2))
    return out


def _numpy_convnet_loss(x, labels, variables):
    kernel0, bias0, kernel2, bias2, kernel4, bias4 = variables
    act0 = np.maximum(_numpy_conv_same(x, kernel0) + bias0, 0)
    act1 = _numpy_max_pool_same(act0, 3, 2)
    act2 = np.maximum(_numpy_conv_same(act1, kernel2) + bias2, 0)
    act3 = _numpy_max_pool_same(act2, 3, 2)
    logits = act3.reshape(len(x), -1) @ kernel4 + bias4
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -np.mean(log_probs[np.arange(len(labels)), labels])
    return loss, np.mean(np.argmax(logits, axis=1) == labels)


def test_build_model_registers_three_blocks_and_one_loss():
    rng = np.random.RandomState(0)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 6, 6, 3])
        y = tf.placeholder(tf.int64, [None])
        layer_collection = kfac.LayerCollection()
        loss, accuracy = convnet.build_model(
            x, y, num_labels=5, layer_collection=layer_collection
        )
        blocks = list(layer_collection.get_blocks())
        assert [type(block).__name__ for block in blocks] == [
            "ConvKFCBasicFB",
            "ConvKFCBasicFB",
            "FullyConnectedKFACBasicFB",
        ]
        assert len(layer_collection.losses) == 1
        # 6x6 -> pool -> 3x3 -> pool -> 2x2, 16 channels.
        assert [v.shape.as_list() for v in tf.trainable_variables()] == [
            [5, 5, 3, 16],
            [16],
            [5, 5, 16, 16],
            [16],
            [64, 5],
            [5],
        ]
        feed = {x: rng.randn(10, 6, 6, 3), y: rng.randint(5, size=10)}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            # Larger weights than the initial ones, so that every layer matters.
            sess.run(
                [
                    v.assign(rng.randn(*v.shape.as_list()) * 0.3)
                    for v in tf.trainable_variables()
                ]
            )
            loss_value, accuracy_value, variables = sess.run(
                [loss, accuracy, tf.trainable_variables()], feed
            )
    expected_loss, expected_accuracy = _numpy_convnet_loss(feed[x], feed[y], variables)
    np.testing.assert_allclose(loss_value, expected_loss, rtol=1e-4)
    np.testing.assert_allclose(accuracy_value, expected_accuracy)


def _build_toy_regression(num_steps=30):
    """Least squares `0.5·mean((x w − y)²)` with w = 0: initial loss 1.25."""
    x = np.asarray([[1.0], [2.0]], np.float32)
    y = np.asarray([[1.0], [2.0]], np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat(num_steps).batch(2)
    x, y = tf.data.make_one_shot_iterator(dataset).get_next()
    w = tf.get_variable("w", shape=[1, 1], initializer=tf.zeros_initializer())
    y_hat = tf.matmul(x, w)
    loss = tf.reduce_mean(0.5 * tf.square(y_hat - y))
    layer_collection = kfac.LayerCollection()
    layer_collection.register_fully_connected(params=w, inputs=x, outputs=y_hat)
    layer_collection.register_normal_predictive_distribution(y_hat)
    return loss, layer_collection


@pytest.mark.parametrize("optimizer", ["kfac", "sgd"])
def test_minimize_loss_single_machine_solves_toy_problem(tf_behavior, optimizer):
    history = []
    with tf.Graph().as_default():
        loss, layer_collection = _build_toy_regression()
        final = convnet.minimize_loss_single_machine(
            loss,
            loss,
            layer_collection,
            optimizer=optimizer,
            learning_rate=0.1,
            momentum=0.5,
            damping=0.01,
            invert_every=1,
            history=history,
            log_every=0,
        )
    assert len(history) == 30  # until the data run out
    assert history[0].loss == pytest.approx(1.25)
    assert final == history[-1].accuracy < 1e-3


def test_minimize_loss_single_machine_rejects_unknown_optimizer():
    with tf.Graph().as_default():
        loss, layer_collection = _build_toy_regression()
        with pytest.raises(
            ValueError, match=r"optimizer must be one of \('kfac', 'sgd'\), got 'adam'"
        ):
            convnet.minimize_loss_single_machine(
                loss, loss, layer_collection, optimizer="adam"
            )


@pytest.mark.parametrize(
    "num_tasks, gradient, cov, inv",
    [
        (1, [0], [], []),
        (2, [0, 1], [], []),
        (3, [0, 1], [], [2]),
        (5, [0, 1, 2], [3], [4]),
        (10, [0, 1, 2, 3, 4, 5], [6, 7, 8], [9]),
    ],
)
def test_distributed_roles_split_tasks(num_tasks, gradient, cov, inv):
    tasks = range(num_tasks)
    assert [t for t in tasks if convnet._is_gradient_task(t, num_tasks)] == gradient
    assert [t for t in tasks if convnet._is_cov_update_task(t, num_tasks)] == cov
    assert [t for t in tasks if convnet._is_inv_update_task(t, num_tasks)] == inv
    assert convnet._num_gradient_tasks(num_tasks) == len(gradient)


def test_minimize_loss_distributed_single_worker_solves_toy_problem(tmp_path):
    history = []
    checkpoint_dir = str(tmp_path / "ckpt")
    with tf.Graph().as_default():
        loss, layer_collection = _build_toy_regression()
        final = convnet.minimize_loss_distributed(
            task_id=0,
            num_worker_tasks=1,
            num_ps_tasks=0,
            master="",
            checkpoint_dir=checkpoint_dir,
            loss=loss,
            accuracy=loss,
            layer_collection=layer_collection,
            learning_rate=0.1,
            momentum=0.5,
            history=history,
            log_every=0,
        )
    assert history[0].loss == pytest.approx(1.25)
    assert final < 0.1
    assert tf.train.latest_checkpoint(checkpoint_dir) is not None


def test_minimize_loss_distributed_stops_at_the_global_step(tmp_path):
    history = []
    checkpoint_dir = str(tmp_path / "ckpt")
    with tf.Graph().as_default():
        loss, layer_collection = _build_toy_regression()
        convnet.minimize_loss_distributed(
            0,
            1,
            0,
            "",
            checkpoint_dir,
            loss,
            loss,
            layer_collection,
            num_steps=5,
            invert_every=1,  # the chief's inverse update follows every step
            history=history,
            log_every=0,
        )
    assert tf.train.latest_checkpoint(checkpoint_dir).endswith("model.ckpt-5")
    # The update of a step is applied by the chief's queue runner while the
    # next step already runs; a gradient computed before that update is stale
    # and dropped, so some steps take 2 runs. The input holds 30 batches.
    assert 5 <= len(history) < 30


@pytest.mark.parametrize(
    "increment, last_step, runs", [(1, 4, 4), (2, 4, 2), (3, 7, 3)]
)
def test_stop_at_global_step_hook_stops_after_the_run_that_reaches_it(
    increment, last_step, runs
):
    with tf.Graph().as_default():
        global_step = tf.train.get_or_create_global_step()
        step = tf.assign_add(global_step, increment)
        hook = convnet.StopAtGlobalStepHook(last_step=last_step)
        count = 0
        with tf.train.SingularMonitoredSession(hooks=[hook]) as sess:
            while not sess.should_stop():
                sess.run(step)
                count += 1
            final_step = sess.raw_session().run(global_step)
    assert count == runs and final_step == runs * increment


def test_stop_at_global_step_hook_sees_steps_made_elsewhere():
    # Another worker's updates move the global step between this task's runs.
    with tf.Graph().as_default():
        global_step = tf.train.get_or_create_global_step()
        other_worker_step = tf.assign_add(global_step, 5)
        own_step = tf.no_op()
        hook = convnet.StopAtGlobalStepHook(last_step=10)
        count = 0
        with tf.train.SingularMonitoredSession(hooks=[hook]) as sess:
            while not sess.should_stop():
                sess.run(own_step)
                count += 1
                sess.raw_session().run(other_worker_step)
    assert count == 3  # the step is 0, 5, 10 after the own runs: stop after 3


def test_stop_at_global_step_hook_needs_a_global_step():
    with tf.Graph().as_default():
        with pytest.raises(RuntimeError, match="needs a global step"):
            convnet.StopAtGlobalStepHook(last_step=1).begin()


def test_minimize_loss_distributed_rejects_bad_task_id():
    with tf.Graph().as_default():
        loss, layer_collection = _build_toy_regression()
        with pytest.raises(
            ValueError, match=r"task_id must lie in \[0, num_worker_tasks=2\), got 2"
        ):
            convnet.minimize_loss_distributed(
                2, 2, 0, "", None, loss, loss, layer_collection
            )


def test_train_mnist_single_machine_kfac_loss_falls():
    # 32 fake examples; a short covariance memory so that K-FAC's statistics
    # forget their identity initialisation within the few steps of a test.
    history = []
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        accuracy = convnet.train_mnist_single_machine(
            None,
            num_epochs=12,
            use_fake_data=True,
            batch_size=8,
            invert_every=4,
            cov_ema_decay=0.8,
            history=history,
            log_every=0,
        )
    assert len(history) == 48
    assert accuracy == history[-1].accuracy
    _assert_loss_falls(history, margin=1.0)


def test_train_mnist_single_machine_sgd_uses_momentum_and_no_kfac():
    history = []
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        accuracy = convnet.train_mnist_single_machine(
            None,
            num_epochs=5,
            use_fake_data=True,
            batch_size=8,
            optimizer="sgd",
            learning_rate=0.01,
            num_steps=3,
            history=history,
            log_every=0,
        )
        names = [v.op.name for v in tf.global_variables()]
    assert len(history) == 3 and accuracy == history[-1].accuracy  # num_steps
    assert all(np.isfinite([stats.loss for stats in history]))
    assert "conv_0/kernel/Momentum" in names
    assert not [name for name in names if name.startswith("KFAC")]


def test_train_mnist_multitower_runs_on_two_cpus():
    history = []
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        convnet.train_mnist_multitower(
            None,
            num_epochs=12,
            num_towers=2,
            batch_size=4,
            invert_every=4,
            cov_ema_decay=0.8,
            history=history,
            log_every=0,
        )
        graph = tf.get_default_graph()
    devices = {
        op.device
        for op in graph.get_operations()
        if op.name.startswith("tower") and op.type != "ReadVariableOp"
    }
    assert devices == {"/device:CPU:0", "/device:CPU:1"}
    assert len(history) == 48
    _assert_loss_falls(history, margin=1.0)


def test_train_mnist_distributed_single_worker_on_fake_data():
    history = []
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        accuracy = convnet.train_mnist_distributed(
            0,
            1,
            0,
            "",
            None,
            num_epochs=2,
            use_fake_data=True,
            batch_size=8,
            history=history,
            log_every=0,
        )
    assert len(history) == 8
    assert 0.0 <= accuracy <= 1.0
    assert all(np.isfinite([stats.loss for stats in history]))


def _parse_flags(argv):
    flag_values = flags.FlagValues()
    convnet.define_flags(flag_values)
    flag_values(["convnet"] + argv)
    return flag_values


def test_main_trains_on_fake_data(capsys):
    flag_values = _parse_flags(
        ["--use_fake_data", "--num_steps=2", "--batch_size=4", "--optimizer=sgd"]
    )
    accuracy = convnet.main([], flag_values=flag_values)
    assert 0.0 <= accuracy <= 1.0
    assert "final mini-batch accuracy: %s" % accuracy in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, function, expected_args, expected_kwargs",
    [
        ([], "train_mnist_single_machine", ("/d", 3), {"optimizer": "kfac"}),
        (
            ["--optimizer=sgd"],
            "train_mnist_single_machine",
            ("/d", 3),
            {"optimizer": "sgd"},
        ),
        (
            ["--num_towers=2"],
            "train_mnist_multitower",
            ("/d", 3, 2),
            {"optimizer": "kfac"},
        ),
        (
            [
                "--distributed",
                "--task=1",
                "--num_worker_tasks=5",
                "--num_ps_tasks=2",
                "--master=grpc://localhost:2222",
            ],
            "train_mnist_distributed",
            (1, 5, 2, "grpc://localhost:2222", "/d", 3),
            {},
        ),
    ],
)
def test_main_dispatches_flags(
    monkeypatch, extra, function, expected_args, expected_kwargs
):
    calls = []

    def fake_train(*args, **kwargs):
        calls.append((args, kwargs))
        assert tf.get_default_graph() is not graph_outside  # main builds a fresh graph
        return 0.5

    monkeypatch.setattr(convnet, function, fake_train)
    flag_values = _parse_flags(
        [
            "--data_dir=/d",
            "--num_epochs=3",
            "--num_steps=7",
            "--batch_size=5",
            "--learning_rate=0.2",
            "--damping=0.3",
        ]
        + extra
    )
    graph_outside = tf.get_default_graph()
    assert convnet.main([], flag_values=flag_values) == 0.5
    [(args, kwargs)] = calls
    assert args == expected_args
    assert kwargs == dict(
        use_fake_data=False,
        batch_size=5,
        num_steps=7,
        learning_rate=0.2,
        damping=0.3,
        **expected_kwargs,
    )


def test_main_rejects_distributed_sgd():
    flag_values = _parse_flags(["--distributed", "--optimizer=sgd"])
    with pytest.raises(
        ValueError, match="--distributed supports --optimizer=kfac only"
    ):
        convnet.main([], flag_values=flag_values)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir(mnist.DEFAULT_DATA_DIR),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_kfac_beats_sgd_on_fashion_mnist():
    """In 60 steps of 64 examples, K-FAC's training loss ends well below SGD's.

    SGD with momentum 0.9 uses learning rate 0.01 (0.03 makes it diverge).
    """
    final_losses = {}
    for optimizer, learning_rate in [("kfac", convnet.LEARNING_RATE), ("sgd", 0.01)]:
        history = []
        with tf.Graph().as_default():
            tf.set_random_seed(0)
            convnet.train_mnist_single_machine(
                None,
                num_epochs=1,
                batch_size=64,
                optimizer=optimizer,
                learning_rate=learning_rate,
                num_steps=60,
                invert_every=10,
                history=history,
                log_every=0,
            )
        assert history[0].loss == pytest.approx(np.log(10), abs=0.1)
        final_losses[optimizer] = np.mean([s.loss for s in history[-10:]])
    assert final_losses["kfac"] < final_losses["sgd"] - 0.2, final_losses
