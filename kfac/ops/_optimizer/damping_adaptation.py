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

import tensorflow.compat.v1 as tf

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
                           compute_rho: Callable[[], tf.Tensor],
                           damping_var: Any, rho_var: Any, omega: float,
                           min_damping: float) -> tf.Operation:
    """Op applying the rule when `(global_step + 1) mod interval == 0`.

    `compute_rho` builds `ρ`; it is only called inside the taken `tf.cond` branch,
    so the previous-batch loss is only evaluated on adaptation steps. Assigns the
    stored `rho` and the damping variable (both keep their values otherwise).
    """
    def adapt():
        rho = tf.cast(compute_rho(), rho_var.dtype.base_dtype)
        new_damping = levenberg_marquardt_damping(
            damping_var, rho, omega, min_damping)
        return rho, new_damping

    def keep():
        return tf.identity(rho_var), tf.identity(damping_var)

    step = tf.convert_to_tensor(global_step)
    is_adaptation_step = tf.equal(
        tf.math.floormod(step + 1, tf.cast(interval, step.dtype.base_dtype)), 0)
    rho, new_damping = tf.cond(is_adaptation_step, adapt, keep)
    return tf.group(tf.assign(rho_var, rho), tf.assign(damping_var, new_damping),
                    name="update_damping")
