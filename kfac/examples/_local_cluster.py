"""The processes of a local TensorFlow cluster: ports, start, kill, restart, reports.

Every task runs `python -m kfac.examples.launch_cluster --job_name=...` (see
there for what a task does) on 127.0.0.1; a worker ends by printing one line
`REPORT_PREFIX <json>`, which `LocalCluster.reports` reads from its log.
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

LOOPBACK = "127.0.0.1"
REPORT_PREFIX = "KFAC_CLUSTER_REPORT "
TIMEOUT_SECS = 600.0
# How long a terminated child gets to exit before it is killed.
TERMINATE_GRACE_SECS = 5.0
POLL_SECS = 0.2


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
