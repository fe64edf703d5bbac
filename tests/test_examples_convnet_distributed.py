"""Tests for kfac/examples/convnet.py: distributed training (roles, stop hook, runs)."""

import functools

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from example_helpers import build_toy_regression
from example_helpers import queue_fed_losses

import kfac
from kfac.examples import _distributed
from kfac.examples import convnet

# When a SyncReplicasOptimizer session closes, the chief's token queue runner
# is cancelled while it waits for the next step's gradients; TensorFlow lets
# that CancelledError end its thread, which pytest reports as a warning.
# The thread may end during a later test, so the filter covers the module.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnhandledThreadExceptionWarning"
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
        loss, layer_collection = build_toy_regression()
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
        loss, layer_collection = build_toy_regression()
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
        loss, layer_collection = build_toy_regression()
        with pytest.raises(
            ValueError, match=r"task_id must lie in \[0, num_worker_tasks=2\), got 2"
        ):
            convnet.minimize_loss_distributed(
                2, 2, 0, "", None, loss, loss, layer_collection
            )


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


def _fake_data_losses(train_fn):
    """Losses of 8 steps on fake data, inverses refreshed every 2nd step."""
    losses = queue_fed_losses(train_fn, invert_every=2, log_every=0, learning_rate=0.3)
    return np.array(losses, np.float64)


def test_one_worker_trains_exactly_like_a_single_machine(tf_behavior):
    """One worker task runs the same steps as `train_mnist_single_machine`.

    The chief refreshes the inverses between two steps; the update of the next
    step, applied by `SyncReplicasOptimizer`'s thread, must use them. Under
    resource variables that thread's run used to read the inverses as soon as
    it started, before the refresh (or after it, as the threads happened to
    run): the losses then differed from the third step on (by 2e-4) and
    between two identical runs.
    """
    single = _fake_data_losses(convnet.train_mnist_single_machine)
    distributed = _fake_data_losses(
        functools.partial(convnet.train_mnist_distributed, 0, 1, 0, "")
    )
    assert len(single) == 8
    assert np.max(np.abs(np.diff(single))) > 1e-3  # the weights changed
    np.testing.assert_allclose(distributed, single, rtol=1e-6, atol=0)


def test_update_reads_inverses_only_after_the_gradients_arrive():
    """Every read of a K-FAC variable in the chief's update waits for a gradient."""
    with tf.Graph().as_default():
        w = tf.get_variable("w", initializer=tf.ones([3, 2]))
        x = tf.constant(np.arange(12.0, dtype=np.float32).reshape(4, 3))
        logits = tf.matmul(x, w)
        layers = kfac.LayerCollection()
        layers.register_fully_connected(w, x, logits)
        layers.register_categorical_predictive_distribution(logits)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.zeros([4], tf.int32), logits=logits
            )
        )
        optimizer = kfac.KfacOptimizer(0.1, 0.95, 0.1, layers, momentum=0.9)
        optimizer.make_ops_and_vars()
        sync = tf.train.SyncReplicasOptimizer(
            _distributed.PreconditionOnceGradientsArrive(optimizer),
            replicas_to_aggregate=1,
        )
        sync.minimize(loss, global_step=tf.train.get_or_create_global_step())
        update = sync.get_chief_queue_runner().enqueue_ops
        reads = [
            op
            for op in _ancestors(update)
            if op.type == "ReadVariableOp" and op.inputs[0].op.name.startswith("KFAC")
        ]
        assert reads  # the inverses (and velocities) are read
        for read in reads:
            assert any(
                "TakeGradient" in op.type for op in _ancestors([read])
            ), read.name


def _ancestors(ops):
    """Every op `ops` depend on (data and control inputs), themselves included."""
    seen, stack = set(), list(ops)
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack.extend(tensor.op for tensor in op.inputs)
            stack.extend(op.control_inputs)
    return seen
