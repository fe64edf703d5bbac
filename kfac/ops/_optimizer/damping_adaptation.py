"""Levenberg-Marquardt adaptation of the damping (Martens & Grosse 2015, §6.5).

Every `interval` steps the reduction ratio

    ρ = (L(θ_t; prev batch) − L(θ_{t−1}; prev batch)) / q,

actual over predicted (by the quadratic model) change of the loss on the previous
batch, decides the new damping: `λ ← λ/ω` if `ρ < ¼`, `λ ← λ·ω` if `ρ > ¾`,
otherwise unchanged, then `λ ← max(λ, min_damping)`, with
`ω = damping_adaptation_decay ** interval`.
"""

from typing import Any
from typing import Callable
from typing import NamedTuple
from typing import Optional
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops._optimizer import arguments
from kfac.ops._optimizer.non_finite_guard import NonFiniteGuard

RHO_LOW = 0.25
RHO_HIGH = 0.75


def levenberg_marquardt_damping(damping: Any, rho: Any, omega: float,
                                min_damping: float) -> tf.Tensor:
    """The new damping given the reduction ratio `rho` (rule in the module doc).

    A non-finite `rho` (e.g. `0/0` before any prediction) leaves `λ` unchanged
    (apart from the `min_damping` floor), as both comparisons are false for NaN.
    """
    damping = tf.convert_to_tensor(damping)
    dtype = damping.dtype.base_dtype
    rho = tf.cast(rho, dtype)
    omega = tf.cast(omega, dtype)
    new_damping = tf.where(
        rho < RHO_LOW, damping / omega,
        tf.where(rho > RHO_HIGH, damping * omega, damping))
    return tf.maximum(new_damping, tf.cast(min_damping, dtype))


def make_damping_update_op(global_step: Any, interval: int,
                           compute_changes: Callable[[], Tuple[Any, Any]],
                           damping_var: Any, rho_var: Any, omega: float,
                           min_damping: float,
                           changes_var: Any = None) -> tf.Operation:
    """Op applying the rule when `(global_step + 1) mod interval == 0`.

    `compute_changes` builds `(actual, predicted)` changes of the loss, whose
    ratio is `ρ`; it is only called inside the taken `tf.cond` branch, so the
    previous-batch loss is only evaluated on adaptation steps. Assigns the
    stored `rho`, the damping variable and (if given) `changes_var`
    ← `[predicted, actual]`; all keep their values otherwise.
    """
    dtype = rho_var.dtype.base_dtype

    def adapt():
        actual, predicted = (tf.cast(change, dtype) for change in compute_changes())
        rho = actual / predicted
        new_damping = levenberg_marquardt_damping(
            damping_var, rho, omega, min_damping)
        return rho, new_damping, tf.stack([predicted, actual])

    def keep():
        changes = (tf.zeros([2], dtype) if changes_var is None
                   else tf.identity(changes_var))
        return tf.identity(rho_var), tf.identity(damping_var), changes

    step = tf.convert_to_tensor(global_step)
    is_adaptation_step = tf.equal(
        tf.math.floormod(step + 1, tf.cast(interval, step.dtype.base_dtype)), 0)
    rho, new_damping, changes = tf.cond(is_adaptation_step, adapt, keep)
    writes = [tf.assign(rho_var, rho), tf.assign(damping_var, new_damping)]
    if changes_var is not None:
        writes.append(tf.assign(changes_var, changes))
    return tf.group(*writes, name="update_damping")


def _scalar_variable(name: str, initializer: Any) -> tf.Variable:
    return tf.get_variable(name, shape=(), dtype=tf.float32,
                           initializer=initializer, trainable=False)


class Rule(NamedTuple):
    """The parameters of the adaptation; the defaults are what the optimizer
    reports before `set_damping_adaptation_params`."""

    is_chief: bool = False
    prev_train_batch: Any = None
    loss_fn: Optional[Callable[[Any], Any]] = None
    min_damping: float = 1e-5
    interval: int = 5
    # ω of §6.5: the decay (0.95 by default) compounded over one interval.
    omega: float = 0.95**5


class DampingAdaptation(object):
    """The damping `λ` of an optimizer and, once enabled, its adaptation state.

    Disabled (as made), `damping` is the constructor's constant. `enable`
    creates, in the current variable scope, the float32 scalar variables
    "rho", "prev_loss", "q_model_change" (0) and "damping" (the constant),
    and "loss_changes" (`[2]`, 0: the predicted and the actual change of the
    loss whose ratio was the last `ρ`); from then on `damping` is that
    variable and a chief's steps update it.

    Args:
      damping: the constructor's damping (number or scalar Tensor).
    """

    def __init__(self, damping: Any) -> None:
        self._constant = damping
        self._variable = None
        # The other variables (None until enabled), read by the optimizer.
        self.rho = self.prev_loss = self.q_model_change = None
        self.loss_changes = None
        self.rule = Rule()

    @property
    def enabled(self) -> bool:
        return self._variable is not None

    @property
    def adapting(self) -> bool:
        """True when this process updates `λ` and `q_model_change` (a chief)."""
        return self.enabled and self.rule.is_chief

    @property
    def variable(self) -> Optional[tf.Variable]:
        """The "damping" variable, None until enabled."""
        return self._variable

    @property
    def damping(self) -> Any:
        """The damping variable when enabled, else the constant."""
        return self._constant if self._variable is None else self._variable

    def enable(self, is_chief: bool, prev_train_batch: Any,
               loss_fn: Callable[[Any], Any], min_damping: float, decay: float,
               interval: int) -> None:
        """Creates the variables (module doc) and stores the rule's parameters."""
        self.rho = _scalar_variable("rho", tf.zeros_initializer())
        self.prev_loss = _scalar_variable("prev_loss", tf.zeros_initializer())
        self.q_model_change = _scalar_variable("q_model_change",
                                               tf.zeros_initializer())
        self.loss_changes = tf.get_variable(
            "loss_changes", shape=[2], dtype=tf.float32,
            initializer=tf.zeros_initializer(), trainable=False)
        if arguments.is_number(self._constant):
            initial = tf.constant(float(self._constant), dtype=tf.float32)
        else:
            initial = tf.cast(self._constant, tf.float32)
        self._variable = tf.get_variable("damping", initializer=initial,
                                         trainable=False)
        self.rule = Rule(is_chief, prev_train_batch, loss_fn, min_damping, interval,
                         decay**interval)

    def update_op(self, global_step: Any) -> tf.Operation:
        """The op adapting `λ` on adaptation steps (`make_damping_update_op`),
        `ρ` from `loss_fn(prev_train_batch)`."""
        rule = self.rule

        def compute_changes():
            prev_batch_loss = tf.cast(rule.loss_fn(rule.prev_train_batch), tf.float32)
            return prev_batch_loss - self.prev_loss, self.q_model_change

        return make_damping_update_op(
            global_step, rule.interval, compute_changes, self._variable, self.rho,
            rule.omega, rule.min_damping, changes_var=self.loss_changes)

    def record_loss(self, loss: Any, non_finite_policy: Optional[str]) -> tf.Operation:
        """`prev_loss ← loss`, kept when `loss` is not finite (unless the policy
        is None)."""
        loss = tf.cast(loss, tf.float32)
        if non_finite_policy is not None:
            # A NaN loss would make every later ρ NaN (λ frozen).
            loss = tf.where(tf.math.is_finite(loss), loss, self.prev_loss)
        return tf.assign(self.prev_loss, loss)

    def record_model_change(self, q_model_change: tf.Tensor,
                            guard: NonFiniteGuard) -> tf.Operation:
        """The op storing the predicted change `q` on an adapting chief (a
        no-op otherwise, or when the guard defers the write)."""
        if not self.adapting:
            return tf.no_op()
        q_model_change = tf.cast(q_model_change, tf.float32)
        if guard.defer(self.q_model_change, q_model_change):
            return tf.no_op()
        return tf.assign(self.q_model_change, q_model_change)
