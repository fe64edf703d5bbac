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
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

import tensorflow.compat.v1 as tf
from absl import flags

from kfac.examples import _cli
from kfac.examples import convnet
from kfac.examples import mnist

LOOPBACK = "127.0.0.1"
REPORT_PREFIX = "KFAC_CLUSTER_REPORT "
DEFAULT_NUM_STEPS = 20
TIMEOUT_SECS = 600.0
# How long a terminated child gets to exit before it is killed.
TERMINATE_GRACE_SECS = 5.0
POLL_SECS = 0.2
# TF's non-chief workers poll "is the model initialised?" every 30 s; on a
# local cluster the chief is ready within seconds.
READINESS_POLL_SECS = 1

FLAGS = flags.FLAGS


@dataclasses.dataclass
class ClusterRun:
    """What `run_cluster` returns.

    Attributes:
      cluster_spec: `{"ps": [address, ...], "worker": [address, ...]}`.
      reports: one dict per worker task, in task order (see `_worker_report`).
      pids: process ids of all tasks, parameter servers first.
      log_dir: folder holding one `<job>_<index>.log` per task.
    """

    cluster_spec: Dict[str, List[str]]
    reports: List[dict]
    pids: List[int]
    log_dir: str


def free_loopback_ports(count: int) -> List[int]:
    """Returns `count` distinct ports that are free on 127.0.0.1 right now.

    Every socket stays bound until all ports are found, so the ports differ.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def make_cluster_spec(num_ps_tasks: int, num_worker_tasks: int) -> Dict[str, List[str]]:
    """`{"ps": [...], "worker": [...]}` on free loopback ports."""
    if num_ps_tasks < 1:
        raise ValueError("num_ps_tasks must be >= 1, got %d." % num_ps_tasks)
    if num_worker_tasks < 1:
        raise ValueError("num_worker_tasks must be >= 1, got %d." % num_worker_tasks)
    addresses = [
        "%s:%d" % (LOOPBACK, port)
        for port in free_loopback_ports(num_ps_tasks + num_worker_tasks)
    ]
    return {"ps": addresses[:num_ps_tasks], "worker": addresses[num_ps_tasks:]}


def _task_command(
    job_name: str, task_index: int, cluster_spec: dict, task_args: Sequence[str]
) -> List[str]:
    return [
        sys.executable,
        "-m",
        "kfac.examples.launch_cluster",
        "--job_name=%s" % job_name,
        "--task_index=%d" % task_index,
        "--cluster_spec=%s" % json.dumps(cluster_spec),
        *task_args,
    ]


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    """Terminates every process that still runs, then kills the stragglers."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + TERMINATE_GRACE_SECS
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_tail(path: str, num_lines: int = 30) -> str:
    with open(path, errors="replace") as log:
        return "".join(log.readlines()[-num_lines:])


def _read_report(path: str) -> dict:
    with open(path, errors="replace") as log:
        for line in log:
            # stderr shares the log: a traceback of TF's queue runner thread
            # may have started the line the report is printed on.
            start = line.find(REPORT_PREFIX)
            if start >= 0:
                # Another writer may also have continued the line.
                report, _ = json.JSONDecoder().raw_decode(
                    line[start + len(REPORT_PREFIX) :]
                )
                return report
    raise RuntimeError(
        "Worker log %s has no report line; its tail:\n%s" % (path, _log_tail(path))
    )


class LocalCluster(object):
    """The processes of one local cluster, started, killed and restarted at will.

    Each task runs as `python -m kfac.examples.launch_cluster --job_name=...`;
    incarnation `k` of a task writes `<job>_<index>.log` (`k = 0`) or
    `<job>_<index>.restart<k>.log`. Use as a context manager: every process
    it started is stopped (terminated, then killed) on exit.

    Args:
      num_ps_tasks, num_worker_tasks: the cluster's jobs (>= 1 each).
      task_args: extra flags for every task.
      log_dir: where the logs go (None: a new temporary folder).
    """

    def __init__(
        self,
        num_ps_tasks: int,
        num_worker_tasks: int,
        task_args: Sequence[str] = (),
        log_dir: Optional[str] = None,
    ):
        self.cluster_spec = make_cluster_spec(num_ps_tasks, num_worker_tasks)
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="kfac_cluster_")
        self.tasks = [("ps", i) for i in range(num_ps_tasks)]
        self.tasks += [("worker", i) for i in range(num_worker_tasks)]
        self._task_args = list(task_args)
        self._processes: Dict[tuple, subprocess.Popen] = {}
        self._log_paths: Dict[tuple, str] = {}
        self._incarnations: Dict[tuple, int] = {}
        self.pids: List[int] = []  # of every process started, in start order

    def start(self, job_name: str, task_index: int) -> subprocess.Popen:
        """Starts (or restarts) one task; returns its process."""
        task = (job_name, task_index)
        incarnation = self._incarnations.get(task, -1) + 1
        self._incarnations[task] = incarnation
        suffix = ".restart%d" % incarnation if incarnation else ""
        log_path = os.path.join(
            self.log_dir, "%s_%d%s.log" % (job_name, task_index, suffix)
        )
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                _task_command(job_name, task_index, self.cluster_spec, self._task_args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._processes[task], self._log_paths[task] = process, log_path
        self.pids.append(process.pid)
        return process

    def start_all(self) -> None:
        for job_name, task_index in self.tasks:
            self.start(job_name, task_index)

    def process(self, job_name: str, task_index: int) -> subprocess.Popen:
        """The newest process of a task."""
        return self._processes[(job_name, task_index)]

    def log_path(self, job_name: str, task_index: int) -> str:
        """The log of the newest incarnation of a task."""
        return self._log_paths[(job_name, task_index)]

    def kill(self, job_name: str, task_index: int) -> None:
        """SIGKILLs a task (no clean-up of any kind runs) and reaps it."""
        process = self.process(job_name, task_index)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def pause(self, job_name: str, task_index: int) -> None:
        """SIGSTOPs a task: it holds its state and does nothing until `resume`."""
        self.process(job_name, task_index).send_signal(signal.SIGSTOP)

    def resume(self, job_name: str, task_index: int) -> None:
        """SIGCONTs a task stopped by `pause`."""
        self.process(job_name, task_index).send_signal(signal.SIGCONT)

    def workers(self) -> List[subprocess.Popen]:
        return [self._processes[task] for task in self.tasks if task[0] == "worker"]

    def check_running(self) -> None:
        """RuntimeError if a ps task exited, or a worker exited with an error."""
        for (job_name, index), process in self._processes.items():
            code = process.poll()
            if code is not None and (job_name == "ps" or code != 0):
                log_path = self._log_paths[(job_name, index)]
                raise RuntimeError(
                    "Task %s:%d exited with code %d; its log %s ends with:\n%s"
                    % (job_name, index, code, log_path, _log_tail(log_path))
                )

    def wait_for_workers(self, timeout_secs: float) -> None:
        """Waits until every worker has exited with code 0.

        Raises:
          RuntimeError: a task failed (a worker that fails would leave the
            others waiting for it forever), or the timeout passed.
        """
        deadline = time.monotonic() + timeout_secs
        while any(process.poll() is None for process in self.workers()):
            self.check_running()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "The workers did not finish within %.0f s; logs in %s."
                    % (timeout_secs, self.log_dir)
                )
            time.sleep(POLL_SECS)
        self.check_running()

    def reports(self) -> List[dict]:
        """The report line of every worker's newest incarnation, in task order."""
        return [
            _read_report(self._log_paths[task])
            for task in self.tasks
            if task[0] == "worker"
        ]

    def stop(self) -> None:
        processes = list(self._processes.values())
        for process in processes:  # a paused task would not act on SIGTERM
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
        _stop(processes)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def run_cluster(
    num_ps_tasks: int = 1,
    num_worker_tasks: int = 4,
    task_args: Sequence[str] = (),
    *,
    timeout_secs: float = TIMEOUT_SECS,
    log_dir: Optional[str] = None,
) -> ClusterRun:
    """Runs one local cluster to completion and collects the workers' reports.

    Args:
      num_ps_tasks: parameter-server tasks (>= 1).
      num_worker_tasks: worker tasks (>= 1).
      task_args: extra flags for every task (`--num_steps=...`,
        `--use_fake_data`, ...).
      timeout_secs: the run fails if the workers take longer.
      log_dir: where the tasks' logs go (None: a new temporary folder).

    Returns:
      A `ClusterRun`; every child process has exited when it returns.

    Raises:
      RuntimeError: a task exited with an error, or the timeout passed.
    """
    with LocalCluster(num_ps_tasks, num_worker_tasks, task_args, log_dir) as cluster:
        cluster.start_all()
        cluster.wait_for_workers(timeout_secs)
        reports = cluster.reports()
    return ClusterRun(
        cluster_spec=cluster.cluster_spec,
        reports=reports,
        pids=cluster.pids,
        log_dir=cluster.log_dir,
    )


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
