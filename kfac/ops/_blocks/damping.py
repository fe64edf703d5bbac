"""Damping of Fisher blocks: stable-identity damping functions and the pi split.

Factors never receive a raw damping number. They receive a zero-argument
callable with a stable identity (`PackagedFunc.func_id`); two functions with
equal ids share one inverse variable. A Kronecker block `A ⊗ G` damped by `d`
is approximated by `(A + π√d I) ⊗ (G + √d/π I)` (Martens & Grosse 2015, §6.3),
with `π` chosen from the factors' traces.
"""

import numbers
from typing import Any
from typing import Callable
from typing import Tuple

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops import _config


def plain_scalar(value):
    """numpy scalars → Python scalars, so ids turn into legal op names.

    With numpy >= 2, `repr(np.int64(4))` is `'np.int64(4)'`, which is not a
    legal TF name; equality and hashing are unchanged by the conversion.
    """
    if isinstance(value, np.generic):
        return value.item()
    return value


class PackagedFunc(object):
    """A zero-argument function with a stable, hashable identity.

    Lambdas differ on every call site; the id lets factors share one inverse
    variable between blocks that ask for the same damping.

    Attributes:
        func_id: tuple identifying the function; callable elements of the id
            given at construction are called each time the id is read (lazy ids).
    """

    def __init__(self, func: Callable[[], Any], func_id: Any):
        """Packages `func` with its id.

        Args:
            func: zero-argument callable returning the damping (float or scalar
                Tensor).
            func_id: a hashable, a thunk producing one, or a list/tuple of those.

        Raises:
            ValueError: if `func` is not callable.
        """
        if not callable(func):
            raise ValueError(
                "PackagedFunc: func must be a zero-argument callable, got %r." % (func,)
            )
        self._func = func
        if not isinstance(func_id, (tuple, list)):
            func_id = (func_id,)
        self._func_id = tuple(func_id)

    def __call__(self):
        return self._func()

    @property
    def func_id(self) -> Tuple[Any, ...]:
        return tuple(
            plain_scalar(elt() if callable(elt) else elt) for elt in self._func_id
        )

    def __repr__(self):
        return "PackagedFunc(func_id=%r)" % (self.func_id,)


def _package_func(func: Callable[[], Any], func_id: Any) -> PackagedFunc:
    """`PackagedFunc(func, func_id)` (kept under the original private name)."""
    return PackagedFunc(func, func_id)


def constant_damping_func(damping) -> PackagedFunc:
    """The damping function of a block that uses `damping` unchanged: id `(damping,)`.

    `damping` may be a Python float, a scalar Tensor or a `tf.Variable`; the
    function returns it as is, so a variable is read when the factor builds its
    ops.
    """
    return PackagedFunc(lambda: damping, (damping,))


def normalize_damping(damping, num_replications: int, power=None):
    """Damping per replication: `damping / num_replications ** power`.

    For parameters applied at `n` locations (conv) or uses (RNN steps) the block
    is `n·(A ⊗ G)`; dividing the damping by `n` makes the effective damping of
    the block `damping` again (Grosse & Martens 2016, §3.2). With a power of 0
    the damping is returned unchanged.

    Args:
        damping: Python float, scalar Tensor or `tf.Variable`.
        num_replications: number of locations/uses `n`.
        power: the exponent; None reads `fisher_blocks.NORMALIZE_DAMPING_POWER`
            now (blocks pass their configuration's value).

    Returns:
        The normalised damping (same kind as `damping`).
    """
    if power is None:
        power = _config.current().normalize_damping_power
    if power:
        return damping / (num_replications**power)
    return damping


def _trace(cov: tf.Tensor) -> tf.Tensor:
    """Trace of a matrix, or sum of a vector holding a diagonal."""
    rank = cov.shape.ndims
    if rank == 1:
        return tf.reduce_sum(cov)
    if rank == 2:
        return tf.linalg.trace(cov)
    raise ValueError(
        "compute_pi_tracenorm: covariances must be rank 1 (a diagonal) or rank 2, "
        "got shape %s." % (cov.shape,)
    )


def compute_pi_tracenorm(left_cov, right_cov) -> tf.Tensor:
    """Trace-norm pi of a Kronecker product `L ⊗ R` (Martens & Grosse 2015, §6.3).

    `π = sqrt((tr(L) / dim L) / (tr(R) / dim R))`, computed as
    `sqrt(tr(L)·dim(R) / (tr(R)·dim(L)))` with the static sizes `shape[0]`.
    A rank-1 argument is a diagonal (its trace is its sum).

    Args:
        left_cov: `[m, m]` matrix or `[m]` diagonal.
        right_cov: `[n, n]` matrix or `[n]` diagonal.

    Returns:
        Scalar Tensor `π`.

    Raises:
        ValueError: if an argument has rank other than 1 or 2.
    """
    left_cov = tf.convert_to_tensor(left_cov)
    right_cov = tf.convert_to_tensor(right_cov)
    left_norm = _trace(left_cov) * int(right_cov.shape[0])
    right_norm = _trace(right_cov) * int(left_cov.shape[0])
    return tf.sqrt(left_norm / right_norm)


def compute_pi_adjusted_damping(left_cov, right_cov, damping, pi_type=None):
    """Splits a damping `d` between the factors of `L ⊗ R` (one place for the pi split).

    `PI_TYPE == "tracenorm"`: `(d·π, d/π)` with `π = compute_pi_tracenorm(L, R)`,
    so that `(L + dπ I) ⊗ (R + d/π I) = L⊗R + d² I + cross terms` with balanced
    cross terms. `PI_TYPE == "off"`: `(d, d)`. Callers pass `d = sqrt(damping)`.

    Args:
        left_cov: the left (input) factor's covariance, `[m, m]` or `[m]`.
        right_cov: the right (output) factor's covariance, `[n, n]` or `[n]`.
        damping: `d`, Python float, scalar Tensor or `tf.Variable`.
        pi_type: "tracenorm" or "off"; None reads `fisher_blocks.PI_TYPE` now
            (blocks pass their configuration's value).

    Returns:
        `(left_damping, right_damping)`.

    Raises:
        ValueError: for an unknown `PI_TYPE` (the original returned None).
    """
    if pi_type is None:
        pi_type = _config.current().pi_type
    if pi_type == _config.PI_TRACENORM_NAME:
        pi = compute_pi_tracenorm(left_cov, right_cov)
        if not isinstance(damping, numbers.Number):
            # A float32 damping variable must still work with float64 factors.
            damping = tf.cast(damping, pi.dtype)
        return (damping * pi, damping / pi)
    if pi_type == _config.PI_OFF_NAME:
        return (damping, damping)
    raise ValueError(
        "compute_pi_adjusted_damping: PI_TYPE must be one of %s, got %r."
        % (_config.PI_TYPES, pi_type)
    )
