r"""Starts a real local TensorFlow cluster and trains the distributed ConvNet.

The launcher picks free loopback ports, builds the cluster spec
`{"ps": ["127.0.0.1:<port>", ...], "worker": [...]}` and starts every task
as its own process (`python -m kfac.examples.launch_cluster --job_name=...`):

* a parameter-server task runs `tf.distribute.Server(cluster, "ps", i)` and
  `server.join()`; the variables (weights and K-FAC's covariances and
  inverses) live there (`tf.train.replica_device_setter`);
* a worker task starts its server and runs
  `convnet.train_mnist_distributed(..., master=server.target)` until the
  global step reaches `--num_steps` (every task honours that stop), then
  prints one line `KFAC_CLUSTER_REPORT <json>` with its losses, final
  accuracy and the devices of K-FAC's covariance variables.

The launcher waits for every worker, terminates the parameter servers, and
prints a JSON summary. Every child is killed when the launcher exits, fails,
or gets Ctrl-C / SIGTERM. Only 127.0.0.1 is used. `LocalCluster` gives the
same processes one by one, to kill (SIGKILL) and restart a task in the middle
of a run: a restarted worker rejoins the job, a restarted chief restores its
newest checkpoint (`--checkpoint_dir`, `--save_checkpoint_steps`).

Run:
  python -m kfac.examples.launch_cluster --use_fake_data --num_steps=20
  python -m kfac.examples.launch_cluster --num_worker_tasks=2 \
      --data_dir=/usr/share/datasets/fashion-mnist --num_steps=100
"""

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from typing import List
from typing import Optional

import tensorflow.compat.v1 as tf
from absl import flags

from kfac.examples import _cli
from kfac.examples import convnet
from kfac.examples import mnist

# The cluster's processes; re-exported here, where the tests and users find them.
from kfac.examples._local_cluster import LOOPBACK  # noqa: F401
from kfac.examples._local_cluster import REPORT_PREFIX
from kfac.examples._local_cluster import TIMEOUT_SECS
from kfac.examples._local_cluster import ClusterRun  # noqa: F401
from kfac.examples._local_cluster import LocalCluster  # noqa: F401
from kfac.examples._local_cluster import _read_report  # noqa: F401
from kfac.examples._local_cluster import free_loopback_ports  # noqa: F401
from kfac.examples._local_cluster import make_cluster_spec  # noqa: F401
from kfac.examples._local_cluster import run_cluster

DEFAULT_NUM_STEPS = 20
# TF's non-chief workers poll "is the model initialised?" every 30 s; on a
# local cluster the chief is ready within seconds.
READINESS_POLL_SECS = 1

FLAGS = flags.FLAGS


def _exit_when_orphaned(parent_pid: int) -> None:
    """Ends this process once the launcher is gone (e.g. killed with -9),
    so a parameter server never outlives it."""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)  # pylint: disable=protected-access

    threading.Thread(target=watch, daemon=True).start()


def _poll_readiness_often() -> None:
    """Makes this worker's `SessionManager` check readiness every second.

    A non-chief worker waits for the chief to initialise the variables on the
    parameter servers and, by default, re-checks every 30 s, which dominates
    a short local run. This changes a default in this worker process only.
    """
    session_manager_class = tf.train.SessionManager
    original_init = session_manager_class.__init__

    def init(self, *args, recovery_wait_secs=READINESS_POLL_SECS, **kwargs):
        original_init(self, *args, recovery_wait_secs=recovery_wait_secs, **kwargs)

    session_manager_class.__init__ = init


def _num_epochs(flag_values: flags.FlagValues) -> Optional[int]:
    """`--num_epochs`; else endless data when `--num_steps` bounds training.

    A worker may need more mini-batches than global steps (the gradients of
    a late worker are stale and dropped), and a gradient task that runs out
    of data would leave the others waiting for its gradients.
    """
    if flag_values.num_epochs is not None:
        return flag_values.num_epochs
    return None if flag_values.num_steps is not None else 1


def _worker_report(task_index: int, graph: tf.Graph, history, accuracy) -> dict:
    """The JSON-able summary a worker prints: step count, losses, accuracy and
    the device of every K-FAC covariance variable (`.../cov`)."""
    losses = [stats.loss for stats in history]
    cov_devices = {
        variable.op.name: variable.device
        for variable in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
        if "/cov" in variable.op.name
    }
    return {
        "task_index": task_index,
        "num_steps": len(history),
        "initial_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "losses": losses,
        "final_accuracy": accuracy,
        "cov_devices": cov_devices,
    }


def run_task(flag_values: flags.FlagValues) -> None:
    """Runs this process's task: a parameter server or a worker."""
    cluster_spec = json.loads(flag_values.cluster_spec)
    cluster = tf.train.ClusterSpec(cluster_spec)
    job_name, task_index = flag_values.job_name, flag_values.task_index
    if job_name == "ps":
        _exit_when_orphaned(os.getppid())
        server = tf.distribute.Server(cluster, job_name="ps", task_index=task_index)
        server.join()
        return
    _poll_readiness_often()
    server = tf.distribute.Server(cluster, job_name="worker", task_index=task_index)
    num_worker_tasks = len(cluster_spec["worker"])
    history: List[convnet.StepStats] = []
    with tf.Graph().as_default() as graph:
        accuracy = convnet.train_mnist_distributed(
            task_index,
            num_worker_tasks,
            len(cluster_spec["ps"]),
            server.target,
            flag_values.data_dir,
            _num_epochs(flag_values),
            flag_values.use_fake_data,
            batch_size=flag_values.batch_size,
            checkpoint_dir=flag_values.checkpoint_dir if task_index == 0 else None,
            save_checkpoint_steps=flag_values.save_checkpoint_steps,
            num_steps=flag_values.num_steps,
            invert_every=flag_values.invert_every,
            cov_ema_decay=flag_values.cov_ema_decay,
            history=history,
            log_every=flag_values.log_every,
        )
    report = _worker_report(task_index, graph, history, accuracy)
    # One write(2) of the whole line: stderr shares the log, and TF's threads
    # may write to it while the process winds down (a print may be split).
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (REPORT_PREFIX + json.dumps(report) + "\n").encode())


FLAGS_TABLE = (
    ("integer", "num_ps_tasks", 1, "Parameter-server tasks."),
    ("integer", "num_worker_tasks", 4, "Worker tasks."),
    ("integer", "num_steps", DEFAULT_NUM_STEPS, "Global steps to train for."),
    _cli.FAKE_DATA_FLAG,
    ("string", "data_dir", mnist.DEFAULT_DATA_DIR, "MNIST-format folder."),
    ("string", "checkpoint_dir", None, "Where the chief saves checkpoints."),
    (
        "integer",
        "save_checkpoint_steps",
        None,
        "Global steps between the chief's checkpoints (default: every 10 min).",
    ),
    (
        "integer",
        "num_epochs",
        None,
        "Passes over the data (default: endless with --num_steps, else 1).",
    ),
    ("integer", "batch_size", convnet.BATCH_SIZE, "Examples per batch."),
    (
        "integer",
        "invert_every",
        convnet.INVERT_EVERY,
        "Steps between inverse updates.",
    ),
    ("float", "cov_ema_decay", convnet.COV_EMA_DECAY, "Covariance EMA decay."),
    ("integer", "log_every", 10, "Steps between log lines."),
    ("float", "timeout_secs", TIMEOUT_SECS, "Fail if the workers take longer."),
    (
        "enum",
        "job_name",
        None,
        "Set by the launcher: this task's job.",
        ("ps", "worker"),
    ),
    ("integer", "task_index", 0, "Set by the launcher."),
    ("string", "cluster_spec", None, "Set by the launcher: the cluster as JSON."),
)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Command-line flags of `main` (launcher and task processes share them)."""
    _cli.define_flags(FLAGS_TABLE, flag_values)


# The flags every task gets from the launcher's own flags.
_TASK_FLAGS = (
    "num_steps",
    "use_fake_data",
    "data_dir",
    "checkpoint_dir",
    "save_checkpoint_steps",
    "num_epochs",
    "batch_size",
    "invert_every",
    "cov_ema_decay",
    "log_every",
)


def _task_args(flag_values: flags.FlagValues) -> List[str]:
    args = []
    for name in _TASK_FLAGS:
        value = flag_values[name].value
        if value is None:
            continue
        if isinstance(value, bool):
            args.append("--%s%s" % ("" if value else "no", name))
        else:
            args.append("--%s=%s" % (name, value))
    return args


def _raise_keyboard_interrupt(signum, frame):
    del signum, frame  # Unused.
    raise KeyboardInterrupt()


def main(argv: List[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """A task when `--job_name` is set; otherwise the launcher, which prints
    the run's summary as one JSON line."""
    del argv  # Unused.
    if flag_values.job_name is not None:
        run_task(flag_values)
        return
    # SIGTERM then unwinds like Ctrl-C through `run_cluster`'s cleanup.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    run = run_cluster(
        flag_values.num_ps_tasks,
        flag_values.num_worker_tasks,
        _task_args(flag_values),
        timeout_secs=flag_values.timeout_secs,
    )
    print(json.dumps(dataclasses.asdict(run)), flush=True)


if __name__ == "__main__":
    _cli.run(define_flags, main)
