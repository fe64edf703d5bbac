"""The non-finite guard of a training step (port addition, `non_finite_policy`).

A guarded step is built in two phases. First its values are computed with every
state write (velocities, the quadratic model's predicted change) deferred: the
parts hand their `(variable, new value)` pairs to `defer`. Then, if every
gradient, step, deferred value and the learning rate is finite, the writes and
`θ ← θ − η·step` run; otherwise nothing is written and the step is counted in
`skipped_steps` ("skip") or the op fails naming the variables ("raise").
"""

import collections
import contextlib
from typing import Any
from typing import Callable
from typing import Iterator
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops._optimizer.arguments import is_number
from kfac.ops._utils import non_finite

VarsAndVectors = List[Tuple[Any, Any]]


class NonFiniteGuard(object):
    """Owns the `num_skipped_steps` counter and the deferred writes of a step.

    Args:
      policy: "skip", "raise" or None (no guard; writes are never deferred).
      variable_scope: the optimizer's variable scope, where the counter lives.
    """

    def __init__(self, policy: Optional[str], variable_scope: Any) -> None:
        self._policy = policy
        self._variable_scope = variable_scope
        self._skipped_steps = None
        # The (variable, new value) writes of the guarded step being built.
        self._deferred_writes = None

    @property
    def policy(self) -> Optional[str]:
        return self._policy

    @property
    def skipped_steps(self) -> tf.Variable:
        """int64 variable `<name>/num_skipped_steps`, made on first access."""
        if self._skipped_steps is None:
            with tf.init_scope(), tf.variable_scope(
                    self._variable_scope, reuse=tf.AUTO_REUSE):
                self._skipped_steps = tf.get_variable(
                    "num_skipped_steps", shape=(), dtype=tf.int64,
                    initializer=tf.zeros_initializer(), trainable=False)
        return self._skipped_steps

    def defer(self, variable: Any, value: tf.Tensor) -> bool:
        """Records the write `variable ← value` while a guarded step is built.

        Returns True if recorded (the caller must not write), False outside a
        guarded step (the caller writes now).
        """
        if self._deferred_writes is None:
            return False
        self._deferred_writes.append((variable, value))
        return True

    @contextlib.contextmanager
    def _deferring(self) -> Iterator[List[Tuple[Any, tf.Tensor]]]:
        self._deferred_writes = []
        try:
            yield self._deferred_writes
        finally:
            self._deferred_writes = None

    def apply_if_finite(
            self, grads_and_vars: VarsAndVectors,
            compute_steps: Callable[[VarsAndVectors], VarsAndVectors],
            apply_steps: Callable[[VarsAndVectors, Optional[str]], tf.Operation],
            learning_rate: Callable[[], Any], global_step: Any,
            name: Optional[str],
            also_run: Callable[[], Sequence[Any]] = list) -> tf.Operation:
        """The training op: `apply_steps(compute_steps(grads_and_vars))` and the
        deferred writes if all values are finite, else the policy's action;
        `global_step` (if given) advances in both cases.

        Args:
          grads_and_vars: `[(gradient, variable)]`.
          compute_steps: builds `[(step, variable)]`; its writes are deferred.
          apply_steps: `(steps_and_vars, name) -> op` writing `θ ← θ − η·step`.
          learning_rate: `() -> η` (a number, or a Tensor that is checked too).
          global_step: variable incremented by the returned op, or None.
          name: name of the returned op.
          also_run: `() -> ops` (called after `compute_steps`) that the returned
            op depends on, whether the step is applied or skipped.
        """
        with self._deferring() as writes:
            steps_and_vars = compute_steps(grads_and_vars)
        checked = collections.OrderedDict()
        for (grad, var), (step, _) in zip(grads_and_vars, steps_and_vars):
            checked[var.op.name] = [grad, step]
        known = {id(value) for values in checked.values() for value in values}
        for variable, value in writes:
            if id(value) not in known:
                checked.setdefault(variable.op.name, []).append(value)
        learning_rate = learning_rate()
        if not is_number(learning_rate):
            checked["learning_rate"] = [learning_rate]
        train_ops = tf.get_collection_ref(tf.GraphKeys.TRAIN_OP)
        train_ops_before = list(train_ops)

        def apply_step():
            assignments = []
            for variable, value in writes:
                with tf.colocate_with(variable):
                    assignments.append(tf.assign(variable, value).op)
            with tf.control_dependencies(assignments):
                update = apply_steps(steps_and_vars, name)
            with tf.control_dependencies([update]):
                return tf.constant(True)

        counter = self.skipped_steps

        def skip_step():
            increment = counter.assign_add(tf.constant(1, dtype=tf.int64),
                                           read_value=False)
            with tf.control_dependencies([increment]):
                return tf.constant(False)

        applied = non_finite.update_if_finite(
            list(checked.items()), apply_step, skip_step, self._policy,
            "the gradient or K-FAC update of")
        with tf.control_dependencies([applied] + list(also_run())):
            if global_step is None:
                train_op = tf.group(applied, name=name)
            else:
                with tf.colocate_with(global_step):
                    train_op = global_step.assign_add(
                        tf.constant(1, dtype=global_step.dtype.base_dtype),
                        name=name, read_value=False)
        # apply_steps registered its op (built inside the tf.cond); the op to
        # run is the one returned here.
        train_ops[:] = train_ops_before + [train_op]
        return train_op
