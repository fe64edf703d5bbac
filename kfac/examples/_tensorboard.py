"""TensorBoard logs of the examples' runs: losses and K-FAC's curvature health.

`--logdir` (default "runs") is the root; one run writes to
`<logdir>/<example>/<date-time>[/<run name>]`. Open them with
`tensorboard --logdir runs`. The scalars are those of `kfac.summaries`
(README: "Watching the curvature") plus the losses the loop reports.
"""

import os
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional

import tensorflow.compat.v1 as tf

import kfac

DEFAULT_LOGDIR = "runs"
LOGDIR_FLAG = (
    "string",
    "logdir",
    DEFAULT_LOGDIR,
    "TensorBoard logs go to <logdir>/<example>/<date-time> "
    "(tensorboard --logdir runs); '' writes none.",
)
SUMMARY_EVERY = 10


def run_logdir(root: Optional[str], example: str) -> Optional[str]:
    """`<root>/<example>/<date-time>`, or None when `root` is None or ''."""
    if not root:
        return None
    return os.path.join(root, example, time.strftime("%Y%m%d-%H%M%S"))


class TrainingLog:
    """The event file of one run.

    `write(step, values, run)` writes the scalars `values` (`{tag: number}`)
    at `step`, and every `summary_every` steps also the K-FAC optimizer's
    summaries (`make_summary_ops`, built here: make the log before the graph
    is finalized), evaluated by `run(fetch)`.

    Args:
      logdir: the run's folder (created).
      optimizer: a `kfac.KfacOptimizer` whose ops exist, or None (other
        optimizers: losses only).
      summary_every: steps between two writes of the curvature summaries.
    """

    def __init__(self, logdir: str, optimizer: Any = None,
                 summary_every: int = SUMMARY_EVERY):
        self.logdir = logdir
        self._summary_every = summary_every
        self._summary = None
        if isinstance(optimizer, kfac.KfacOptimizer):
            self._summary = optimizer.make_summary_ops(collections=[])
        self._writer = tf.summary.FileWriter(logdir)

    def write(self, step: int, values: Dict[str, float],
              run: Optional[Callable[[Any], Any]] = None) -> None:
        summary = tf.Summary(value=[
            tf.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in values.items()])
        self._writer.add_summary(summary, step)
        if (self._summary is not None and run is not None
                and step % self._summary_every == 0):
            self._writer.add_summary(run(self._summary), step)

    def close(self) -> None:
        self._writer.close()


def training_log(logdir: Optional[str], optimizer: Any = None,
                 summary_every: int = SUMMARY_EVERY) -> Optional[TrainingLog]:
    """A `TrainingLog` in `logdir`, or None when `logdir` is None."""
    if logdir is None:
        return None
    return TrainingLog(logdir, optimizer, summary_every)
