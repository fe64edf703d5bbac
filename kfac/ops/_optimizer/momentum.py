"""The velocities of the K-FAC step: one "velocity" slot per variable.

`v ← decay·v + coeff·vec` is the heavy-ball momentum of the "regular" and
"adam" steps (`decay` the momentum, `coeff` 1) and the quadratic model's update
of the "qmodel" step (`decay = μ`, `coeff = −α`); `−η·v` is the previous update
the quadratic model compares the new one with.
"""

from typing import Any
from typing import Callable
from typing import List
from typing import Sequence
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops._optimizer.arguments import is_number
from kfac.ops._optimizer.non_finite_guard import NonFiniteGuard
from kfac.ops._optimizer.vectors import dense

VarsAndVectors = List[Tuple[Any, Any]]


class Velocities(object):
    """Updates and reads the velocity slots of the optimised variables.

    Args:
      slot_for: `variable -> velocity slot`, created (zeros) on first use.
      guard: defers the writes while a guarded step is built.
    """

    def __init__(self, slot_for: Callable[[Any], tf.Variable],
                 guard: NonFiniteGuard) -> None:
        self._slot_for = slot_for
        self._guard = guard

    def update(self, vecs_and_vars: VarsAndVectors, decay: Any,
               vec_coeff: Any = 1.0) -> VarsAndVectors:
        """`v ← decay·v + vec_coeff·vec` for each pair; returns `[(new v, var)]`.

        The assignment is colocated with the slot and the returned tensor reads
        the updated value (in a guarded step: the value to be written).
        """
        def update_velocity(vec, var):
            velocity = self._slot_for(var)
            with tf.colocate_with(velocity):
                # Read/modify/write: not safe for asynchronous updates.
                scaled = dense(vec)
                if not (is_number(vec_coeff) and vec_coeff == 1.0):
                    # (A multiplication by 1 would be one more pass over the
                    # parameters.)
                    scaled = vec_coeff * scaled
                new_velocity = decay * velocity + scaled
                if self._guard.defer(velocity, new_velocity):
                    return new_velocity, var
                return tf.identity(velocity.assign(new_velocity)), var

        return [update_velocity(vec, var) for vec, var in vecs_and_vars]

    def previous_updates(self, variables: Sequence[Any],
                         learning_rate_as: Callable[[tf.DType], tf.Tensor]
                         ) -> List[tf.Tensor]:
        """The previous update `δ = −η·v` of each variable (`v` its velocity)."""
        prev_updates = []
        for var in variables:
            velocity = self._slot_for(var)
            learning_rate = learning_rate_as(velocity.dtype.base_dtype)
            prev_updates.append(-learning_rate * velocity)
        return prev_updates
