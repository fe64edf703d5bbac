"""Inverse updates by need: how far a factor drifted since its inverse was made.

With `PeriodicInvCovUpdateKfacOpt(invert_every="adaptive", max_drift=δ,
min_every=m, max_every=M)`, after the covariance updates of each step every
factor with an inverse is checked: with `C` its moving average now, `C₀` the
one its inverse (or eigenbasis) was last computed from, and `k` the steps
since then, the inverse is recomputed when

    it never was, or k ≥ M, or (k ≥ m and ‖C − C₀‖_F > δ ‖C₀‖_F).

The relative Frobenius change is exact and costs O(n²) per factor and step
(against O(n³) for an inverse), at the price of one stored copy `C₀` per
factor (`snapshot`). A change of the damping alone does not count as drift:
it is picked up at the next refresh, at most `M` steps later. The state
(`snapshot`, `last_step`, and the counter `num_inverse_updates`) is made of
variables, so the schedule is deterministic and restored from checkpoints.
"""

import dataclasses
import numbers
from typing import Any
from typing import Optional

import tensorflow.compat.v1 as tf

ADAPTIVE = "adaptive"
DEFAULTS = dict(max_drift=0.1, min_every=1, max_every=50)


@dataclasses.dataclass(frozen=True)
class DriftSchedule:
    """`max_drift` (relative Frobenius change), `min_every` ≤ `max_every` steps."""

    max_drift: float
    min_every: int
    max_every: int

    def __post_init__(self):
        if (isinstance(self.max_drift, bool)
                or not isinstance(self.max_drift, numbers.Real)
                or not self.max_drift >= 0):
            raise ValueError("max_drift must be a nonnegative number; got {!r}."
                             .format(self.max_drift))
        for name in ("min_every", "max_every"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                    or value < 1):
                raise ValueError("{} must be a positive integer; got {!r}."
                                 .format(name, value))
        if self.min_every > self.max_every:
            raise ValueError("min_every ({}) must not exceed max_every ({})."
                             .format(self.min_every, self.max_every))


def schedule_from_arguments(invert_every: Any, max_drift: Optional[float],
                            min_every: Optional[int],
                            max_every: Optional[int]) -> Optional[DriftSchedule]:
    """The adaptive schedule for `invert_every="adaptive"`, else None.

    Raises:
      ValueError: another string for `invert_every`, or a drift argument
        given with a fixed period.
    """
    given = dict(max_drift=max_drift, min_every=min_every, max_every=max_every)
    if isinstance(invert_every, str):
        if invert_every != ADAPTIVE:
            raise ValueError("invert_every must be a positive integer or {!r}; got "
                             "{!r}.".format(ADAPTIVE, invert_every))
        values = {name: DEFAULTS[name] if value is None else value
                  for name, value in given.items()}
        return DriftSchedule(**values)
    named = sorted(name for name, value in given.items() if value is not None)
    if named:
        raise ValueError("{} apply only with invert_every={!r}; got invert_every={!r}."
                         .format(", ".join(named), ADAPTIVE, invert_every))
    return None


class DriftState(object):
    """One factor's `snapshot`, `last_step` (-1: never) and `num_inverse_updates`,
    made in the current variable scope under `drift/<factor name>/`."""

    def __init__(self, factor: Any):
        self.factor = factor
        cov = factor.get_cov_var()
        with tf.variable_scope("drift/" + factor.name):
            self.snapshot = tf.get_variable(
                "snapshot", shape=cov.shape, dtype=cov.dtype.base_dtype,
                initializer=tf.zeros_initializer(), trainable=False)
            self.last_step = tf.get_variable(
                "last_step", shape=(), dtype=tf.int64,
                initializer=tf.constant_initializer(-1), trainable=False)
            self.count = tf.get_variable(
                "num_inverse_updates", shape=(), dtype=tf.int64,
                initializer=tf.zeros_initializer(), trainable=False)

    def relative_drift(self) -> tf.Tensor:
        """`‖C − C₀‖_F / ‖C₀‖_F` (infinite for `C₀ = 0`, i.e. before any refresh)."""
        cov = tf.convert_to_tensor(self.factor.get_cov_var())
        snapshot = self.snapshot.read_value()
        change = tf.norm(tf.reshape(cov - snapshot, [-1]))
        return change / tf.norm(tf.reshape(snapshot, [-1]))

    def is_due(self, schedule: DriftSchedule, counter_value: tf.Tensor) -> tf.Tensor:
        """Whether the factor's inverse is to be recomputed at this step."""
        last = self.last_step.read_value()
        since = counter_value - last
        drifted = tf.logical_and(
            tf.greater_equal(since, schedule.min_every),
            tf.greater(self.relative_drift(),
                       tf.cast(schedule.max_drift, self.snapshot.dtype.base_dtype)))
        return tf.logical_or(
            tf.logical_or(tf.less(last, 0),
                          tf.greater_equal(since, schedule.max_every)),
            drifted)

    def record(self, counter_value: tf.Tensor) -> tf.Operation:
        """Ops noting that the inverse was computed from the current `C` now."""
        cov = tf.convert_to_tensor(self.factor.get_cov_var())
        return tf.group(
            self.snapshot.assign(cov, read_value=False),
            self.last_step.assign(counter_value, read_value=False),
            self.count.assign_add(tf.constant(1, tf.int64), read_value=False))
