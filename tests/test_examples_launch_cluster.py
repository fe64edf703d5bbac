"""Tests for kfac/examples/launch_cluster.py: a real local ps/worker cluster."""

import os
import socket

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from absl import flags

from kfac.examples import launch_cluster


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(pid, 0); it has exited all the same.
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_make_cluster_spec_uses_distinct_free_loopback_ports():
    spec = launch_cluster.make_cluster_spec(num_ps_tasks=2, num_worker_tasks=3)
    assert len(spec["ps"]) == 2 and len(spec["worker"]) == 3
    addresses = spec["ps"] + spec["worker"]
    assert len(set(addresses)) == 5
    for address in addresses:
        host, port = address.split(":")
        assert host == "127.0.0.1"
        with socket.socket() as sock:
            sock.bind((host, int(port)))  # Still free.


@pytest.mark.parametrize("num_ps_tasks, num_worker_tasks", [(0, 2), (1, 0)])
def test_make_cluster_spec_rejects_empty_jobs(num_ps_tasks, num_worker_tasks):
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        launch_cluster.make_cluster_spec(num_ps_tasks, num_worker_tasks)


def test_cluster_trains_with_covariances_on_ps_and_leaves_no_process(tmp_path):
    # The workers' interleaving decides which gradients are stale, so the
    # losses differ from run to run: memorisation starts after 15-25 steps,
    # and a single batch may spike later; 40 steps leave the last 10 near 0.
    num_steps = 40
    checkpoint_dir = tmp_path / "ckpt"
    run = launch_cluster.run_cluster(
        num_ps_tasks=1,
        num_worker_tasks=2,
        task_args=[
            "--use_fake_data",
            "--batch_size=8",
            "--num_steps=%d" % num_steps,
            "--invert_every=4",
            "--cov_ema_decay=0.8",
            "--log_every=0",
            "--checkpoint_dir=%s" % checkpoint_dir,
        ],
        timeout_secs=300,
        log_dir=str(tmp_path),
    )
    try:
        assert len(run.pids) == 3
        assert not [pid for pid in run.pids if _pid_alive(pid)]
        # Both workers stopped by themselves at the same global step.
        assert len(run.reports) == 2 and None not in run.reports
        checkpoint = tf.train.latest_checkpoint(str(checkpoint_dir))
        assert checkpoint.endswith("model.ckpt-%d" % num_steps), checkpoint
        # Every global step averages the gradients of 2 runs (a run whose
        # gradients were stale counts too, so there may be more runs).
        assert sum(report["num_steps"] for report in run.reports) >= 2 * num_steps
        chief = run.reports[0]
        losses = chief["losses"]
        assert all(np.isfinite(losses)), losses
        # Random labels on 32 examples: the loss starts near ln(10) and K-FAC
        # memorises them (the median ignores a late single-batch spike).
        assert losses[0] == pytest.approx(np.log(10), abs=0.3)
        assert np.median(losses[-10:]) < losses[0] - 1.0, losses
        for report in run.reports:
            # 2 conv layers and 1 linear layer: input and output factor each.
            assert len(report["cov_devices"]) == 6, report["cov_devices"]
            for name, device in report["cov_devices"].items():
                assert name.endswith("/cov")
                assert "/job:ps" in device, (name, device)
        assert (checkpoint_dir / "checkpoint").exists()
    finally:
        for pid in run.pids:
            if _pid_alive(pid):
                os.kill(pid, 9)


def test_failing_worker_fails_the_run_and_leaves_no_process(tmp_path):
    # A missing data folder makes every worker exit with an error.
    with pytest.raises(RuntimeError, match="exited with code") as error:
        launch_cluster.run_cluster(
            num_ps_tasks=1,
            num_worker_tasks=1,
            task_args=["--data_dir=%s" % (tmp_path / "missing"), "--num_steps=2"],
            timeout_secs=300,
            log_dir=str(tmp_path),
        )
    assert "worker:0" in str(error.value) or "Worker 0" in str(error.value)
    assert "missing" in str(error.value)


def test_read_report_finds_the_line_after_other_output(tmp_path):
    # stderr shares the log: a thread's traceback may start the report's line.
    log = tmp_path / "worker_0.log"
    log.write_text(
        "I1129 some log line\n"
        "Exception in thread QueueRunnerThread"
        + launch_cluster.REPORT_PREFIX
        + '{"task_index": 0, "num_steps": 3}\n'
        ":\nTraceback (most recent call last):\n"
    )
    assert launch_cluster._read_report(str(log)) == {"task_index": 0, "num_steps": 3}
    log.write_text("I1129 no report\n")
    with pytest.raises(RuntimeError, match="has no report line"):
        launch_cluster._read_report(str(log))


def test_read_report_ignores_what_another_writer_appended(tmp_path):
    log = tmp_path / "worker_1.log"
    log.write_text(
        launch_cluster.REPORT_PREFIX
        + '{"task_index": 1, "losses": [0.5]}2026-12-02 15:33:41.2: W queue_runner\n'
    )
    assert launch_cluster._read_report(str(log)) == {"task_index": 1, "losses": [0.5]}


@pytest.mark.parametrize(
    "num_steps, num_epochs, expected",
    [
        (5, None, None),  # the global step bounds training: endless data
        (5, 2, 2),
        (None, None, 1),
        (None, 3, 3),
    ],
)
def test_num_epochs_is_endless_when_num_steps_bounds_training(
    num_steps, num_epochs, expected
):
    flag_values = flags.FlagValues()
    launch_cluster.define_flags(flag_values)
    flag_values(["launch_cluster"])
    flag_values.num_steps, flag_values.num_epochs = num_steps, num_epochs
    assert launch_cluster._num_epochs(flag_values) == expected
