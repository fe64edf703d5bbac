"""Faults in a real local cluster lose nothing (kfac/examples/launch_cluster.py).

Synchronous K-FAC training of the convnet on 1 ps + 2 workers, the chief
saving a checkpoint every few global steps. A task is killed with SIGKILL in
the middle of the run and started again. Every decision waits for an event
in the logs or on disk (a loss reached, a checkpoint written), never for a
time, so the tests hold however fast the machine is.
"""

import os
import re
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from test_examples_launch_cluster import _pid_alive

from kfac.examples import launch_cluster

pytestmark = pytest.mark.slow

NUM_STEPS = 45
TIMEOUT_SECS = 300.0
# "step: 3 | global_step: 17 | loss: 2.1 | accuracy: 0.2" (mlp.run_training_loop).
_LINE = re.compile(r"step: \d+ \| global_step: (\d+) \| loss: (\S+) \|")
_RESTORED = re.compile(r"Restoring parameters from .*model\.ckpt-(\d+)")


def _progress(path):
    """`[(global_step, loss)]` of a worker log, in order (duplicates dropped)."""
    with open(path, errors="replace") as log:
        text = log.read()
    points = [(int(step), float(loss)) for step, loss in _LINE.findall(text)]
    # absl and TF's logger may both print a line: keep one of each.
    return [p for i, p in enumerate(points) if i == 0 or p != points[i - 1]]


def _checkpoint_step(checkpoint_dir):
    path = tf.train.latest_checkpoint(checkpoint_dir)
    return -1 if path is None else int(path.rsplit("-", 1)[1])


def _wait_for(cluster, condition, what):
    deadline = time.monotonic() + TIMEOUT_SECS
    while not condition():
        cluster.check_running()
        if time.monotonic() > deadline:
            raise RuntimeError(
                "Timed out waiting for %s; logs in %s" % (what, cluster.log_dir)
            )
        time.sleep(0.2)


def _start(tmp_path):
    checkpoint_dir = str(tmp_path / "ckpt")
    cluster = launch_cluster.LocalCluster(
        num_ps_tasks=1,
        num_worker_tasks=2,
        task_args=[
            "--use_fake_data",
            "--batch_size=8",
            "--num_steps=%d" % NUM_STEPS,
            "--invert_every=4",
            "--cov_ema_decay=0.8",
            "--log_every=1",
            "--checkpoint_dir=%s" % checkpoint_dir,
            "--save_checkpoint_steps=3",
        ],
        log_dir=str(tmp_path / "logs"),
    )
    os.makedirs(cluster.log_dir)
    cluster.start_all()
    return cluster, checkpoint_dir


def _kill_once_learnt(cluster, checkpoint_dir, victim):
    """Waits until the chief's loss fell below 0.5 and a checkpoint was saved
    after that; SIGKILLs worker `victim`. Returns the victim's `(global step,
    loss)` log until the kill, the largest global step any worker had logged,
    and the newest checkpoint step at the kill."""
    chief_log = cluster.log_path("worker", 0)
    learnt_at = []

    def learnt_and_saved():
        if not learnt_at:
            learnt_at.extend(s for s, loss in _progress(chief_log) if loss < 0.5)
        return learnt_at and _checkpoint_step(checkpoint_dir) >= learnt_at[0]

    _wait_for(cluster, learnt_and_saved, "a low loss and a checkpoint")
    before = _progress(cluster.log_path("worker", victim))
    reached = max(
        _progress(cluster.log_path("worker", index))[-1][0] for index in (0, 1)
    )
    cluster.kill("worker", victim)
    return before, reached, _checkpoint_step(checkpoint_dir)


def _check_finished(cluster, checkpoint_dir):
    """Both workers stopped at the step target; the final variables are finite."""
    cluster.wait_for_workers(TIMEOUT_SECS)
    assert _checkpoint_step(checkpoint_dir) == NUM_STEPS
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(checkpoint_dir))
    names = reader.get_variable_to_shape_map()
    # K-FAC's state is in the checkpoint: moving averages, inverses, the
    # velocity slots (named after the optimizer) and the global step.
    assert sum(name.endswith("/cov") for name in names) == 6, sorted(names)
    assert any("matpower" in name for name in names), sorted(names)
    assert {"conv_0/kernel/KFAC", "fc_4/bias/KFAC", "global_step"} <= set(names)
    for name in names:
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name
    return [report["final_loss"] for report in cluster.reports()]


def _log_has(cluster, job_name, task_index, text):
    with open(cluster.log_path(job_name, task_index), errors="replace") as log:
        return text in log.read()


def test_a_killed_worker_restarts_and_training_reaches_the_step_target(tmp_path):
    cluster, checkpoint_dir = _start(tmp_path)
    with cluster:
        before, _, _ = _kill_once_learnt(cluster, checkpoint_dir, victim=1)
        killed_at = before[-1][0]
        assert cluster.process("worker", 1).returncode == -9
        # The chief alone can drive the job to its end (it may hand in both
        # gradients of a step), which would leave nothing to rejoin: it is
        # paused until the restarted worker has its session.
        cluster.pause("worker", 0)
        cluster.start("worker", 1)
        _wait_for(
            cluster,
            lambda: _log_has(cluster, "worker", 1, "Done running local_init_op"),
            "the restarted worker's session",
        )
        cluster.resume("worker", 0)
        final_losses = _check_finished(cluster, checkpoint_dir)
        after = _progress(cluster.log_path("worker", 1))
    print(
        "worker 1 killed at global step %d (losses before %s), rejoined at %d "
        "(losses after %s); final losses %s"
        % (
            killed_at,
            [round(loss, 4) for _, loss in before[-5:]],
            after[0][0],
            [round(loss, 4) for _, loss in after[:5]],
            final_losses,
        )
    )
    # The restarted worker joined the running job where it was: the chief and
    # the parameter servers kept the state, so no global step was lost.
    assert after[0][0] >= killed_at, (before[-3:], after[:3])
    assert np.all(np.isfinite(final_losses)), final_losses
    assert not [pid for pid in cluster.pids if _pid_alive(pid)]


def test_a_killed_chief_restores_its_checkpoint_and_continues(tmp_path):
    cluster, checkpoint_dir = _start(tmp_path)
    with cluster:
        before, reached, saved_step = _kill_once_learnt(
            cluster, checkpoint_dir, victim=0
        )
        initial_loss = before[0][1]
        killed_at, loss_before = before[-1]
        cluster.start("worker", 0)
        final_losses = _check_finished(cluster, checkpoint_dir)
        restart_log = cluster.log_path("worker", 0)
        with open(restart_log, errors="replace") as log:
            restored = [int(step) for step in _RESTORED.findall(log.read())]
        after = _progress(restart_log)
    print(
        "chief killed at global step %d (job at %d; losses before %s, initial "
        "%.4f), restored model.ckpt-%d (%d steps lost); first losses after %s; "
        "final losses %s"
        % (
            killed_at,
            reached,
            [round(loss, 4) for _, loss in before[-5:]],
            initial_loss,
            restored[0] if restored else -1,
            max(reached - (restored[0] if restored else 0), 0),
            [round(loss, 4) for _, loss in after[:5]],
            final_losses,
        )
    )
    # It restored a checkpoint saved after the loss was low (the newest one at
    # the kill, or one saved while it died), and lost at most the steps since.
    assert restored and restored[0] >= saved_step, (restored, saved_step)
    assert reached - restored[0] < 10, (reached, restored)
    # The curve goes on from there: no jump back to the initial loss (ln 10
    # on random labels).
    assert initial_loss == pytest.approx(np.log(10), abs=0.3)
    first_losses = [loss for _, loss in after[:5]]
    assert np.median(first_losses) < 0.5 * initial_loss, (loss_before, first_losses)
    assert np.all(np.isfinite(final_losses)), final_losses
    assert not [pid for pid in cluster.pids if _pid_alive(pid)]
