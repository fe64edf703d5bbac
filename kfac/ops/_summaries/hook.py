"""`KfacHook`: K-FAC's curvature updates and health report as a SessionRunHook."""

import logging
from typing import Any
from typing import Dict

import tensorflow.compat.v1 as tf

from kfac.ops._summaries import health as health_lib
from kfac.ops._summaries import spectrum

LOGGER = logging.getLogger("kfac.health")


def format_report(step: int, values: Dict[str, float]) -> str:
    """The one-line health report of `values` (`curvature_health`, evaluated)."""
    parts = ["kfac step {}".format(step)]
    for name in ("damping", "learning_rate", "rho", "qmodel_alpha", "qmodel_mu"):
        key = health_lib.PREFIX + "/" + name
        if key in values:
            parts.append("{} {:.4g}".format(name, values[key]))
    conditions = health_lib.condition_numbers(values)
    if conditions:
        worst, value = max(conditions, key=lambda item: item[1])
        parts.append("worst conditioned {} {:.3g}".format(worst, value))
    parts.append("skipped steps {:d}, factor updates {:d}".format(
        int(values[health_lib.PREFIX + "/skipped_steps"]),
        int(values[health_lib.PREFIX + "/skipped_factor_updates"])))
    return " | ".join(parts)


class KfacHook(tf.train.SessionRunHook):
    """Runs K-FAC's covariance and inverse updates on a schedule and reports.

    For loops that run only the training op (`Estimator`,
    `MonitoredTrainingSession`). With step `s` counted from the global step at
    session creation (0 without one), every run of the session:

    * adds `cov_update_op` to the run when `s % cov_update_every == 0` (the
      classic `sess.run([train_op, cov_update_op])`, sharing its forward pass);
    * after it, runs `inv_update_op` in a run of its own when
      `s % invert_every == 0` (so `s = 0` replaces the identity inverses at once);
    * every `report_every` steps (0: never), evaluates `curvature_health` and
      logs one line on the "kfac.health" logger (damping, learning rate, ρ,
      worst-conditioned factor, skipped steps); `last_report` keeps the values.

    A `PeriodicInvCovUpdateKfacOpt` refreshes its statistics in its training
    op; the hook then only reports.

    Usage (build the hook before `minimize`, which then reuses its ops):

        optimizer = kfac.KfacOptimizer(...)
        hook = kfac.KfacHook(optimizer, invert_every=10, report_every=100)
        train_op = optimizer.minimize(loss, global_step=global_step)
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op,
                                          training_hooks=[hook])

    Args:
      optimizer: a `KfacOptimizer`.
      invert_every: steps between inverse updates (positive int).
      cov_update_every: steps between covariance updates (positive int).
      report_every: steps between health reports; 0 disables them.
      cov_update_op, inv_update_op: the ops to run, when the optimizer's ops
        were made by an explicit method before the hook; otherwise the hook
        makes them (`make_ops_and_vars`) or takes the implicit ones.
      num_iterations: Lanczos steps of the report's eigenvalue estimates.

    Raises:
      ValueError: a bad period, or the optimizer's ops were made explicitly
        and the ops were not passed.
    """

    def __init__(self, optimizer: Any, invert_every: int = 10,
                 cov_update_every: int = 1, report_every: int = 100,
                 cov_update_op: Any = None, inv_update_op: Any = None,
                 num_iterations: int = spectrum.DEFAULT_NUM_ITERATIONS) -> None:
        for name, value, minimum in (("invert_every", invert_every, 1),
                                     ("cov_update_every", cov_update_every, 1),
                                     ("report_every", report_every, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError("KfacHook: {} must be an integer >= {}; got {!r}."
                                 .format(name, minimum, value))
        self._optimizer = optimizer
        self._invert_every = invert_every
        self._cov_update_every = cov_update_every
        self._report_every = report_every
        self._num_iterations = num_iterations
        self._cov_update_op = cov_update_op
        self._inv_update_op = inv_update_op
        if not optimizer.updates_curvature_in_train_op and (
                cov_update_op is None or inv_update_op is None):
            self._cov_update_op, self._inv_update_op = self._curvature_ops()
        self._health = None
        self._global_step = None
        self._step = 0
        self.last_report = None

    def _curvature_ops(self):
        optimizer = self._optimizer
        if not optimizer.estimator.made_vars():
            _, cov_update_op, _, inv_update_op, _, _ = optimizer.make_ops_and_vars()
            return cov_update_op, inv_update_op
        try:
            return optimizer.cov_update_op, optimizer.inv_update_op
        except AttributeError:
            raise ValueError(
                "KfacHook: the optimizer's ops were made by an explicit method; pass "
                "its cov_update_op and inv_update_op to the hook (or build the hook "
                "before them).") from None

    @property
    def step(self) -> int:
        """The step the next run of the session will be."""
        return self._step

    def begin(self) -> None:
        if self._report_every:
            self._health = health_lib.curvature_health(
                self._optimizer, num_iterations=self._num_iterations)
        self._global_step = tf.train.get_global_step()

    def after_create_session(self, session: Any, coord: Any) -> None:
        del coord  # Unused.
        self._step = 0 if self._global_step is None else int(
            session.run(self._global_step))

    def before_run(self, run_context: Any) -> Any:
        del run_context  # Unused.
        if (self._cov_update_op is not None
                and self._step % self._cov_update_every == 0):
            return tf.train.SessionRunArgs(self._cov_update_op)
        return None

    def after_run(self, run_context: Any, run_values: Any) -> None:
        del run_values  # Unused.
        session = run_context.session
        if self._inv_update_op is not None and self._step % self._invert_every == 0:
            session.run(self._inv_update_op)
        if self._report_every and self._step % self._report_every == 0:
            self.last_report = report_values(session, self._health)
            LOGGER.info(format_report(self._step, self.last_report))
        self._step += 1


def report_values(session: Any, scalars: Dict[str, Any]) -> Dict[str, float]:
    """`scalars` evaluated in `session`, as floats."""
    return {name: float(value) for name, value in session.run(scalars).items()}
