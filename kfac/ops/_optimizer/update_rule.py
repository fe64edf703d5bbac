"""The K-FAC step of each momentum type (API.md §8 table).

With `F̂⁻¹` the estimator's damped inverse and `v` the velocity:

* "regular": `p = F̂⁻¹g` (KL-clipped with a norm constraint), `v ← m·v + p`,
  step `v`;
* "adam": `v ← m·v + g`, step `F̂⁻¹v` (momentum before preconditioning; not
  Adam's second-moment scaling);
* "qmodel": `p = F̂⁻¹g`, `(α, μ)` from the quadratic model over `(p, δ)` with
  `δ` the previous update, `v ← μ·v − α·p`, step `v`.

On an adapting chief every step also stores the quadratic model's predicted
change `q` for the damping adaptation, before the velocities are written. Every
step also builds the op recording its statistics (`step_statistics`: per-block
gradient products, the quadratic model's `(α, μ)`, the clipping coefficient);
the optimizer makes its training op depend on it (`take_pending`), off the
step's critical path.
"""

from typing import Any
from typing import Callable
from typing import List
from typing import Optional
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops._optimizer.damping_adaptation import DampingAdaptation
from kfac.ops._optimizer.momentum import Velocities
from kfac.ops._optimizer.non_finite_guard import NonFiniteGuard
from kfac.ops._optimizer.norm_constraint import NormConstraint
from kfac.ops._optimizer.norm_constraint import scale_vectors
from kfac.ops._optimizer.qmodel import QuadraticModel
from kfac.ops._optimizer.step_statistics import StepStatistics

VarsAndVectors = List[Tuple[Any, Any]]


def _identity(vector: Any) -> Any:
    """A copy of `vector` made under the current control dependencies (an
    `IndexedSlices` stays one)."""
    if isinstance(vector, tf.IndexedSlices):
        return tf.IndexedSlices(tf.identity(vector.values), vector.indices,
                                vector.dense_shape)
    return tf.identity(vector)


class UpdateRule(object):
    """Builds `[(step, var)]` from `[(gradient, var)]` with the optimizer's parts.

    Args:
      momentum_type: "regular", "adam" or "qmodel".
      momentum: `m` of "regular" and "adam".
      estimator: its `multiply_inverse` gives `[(F̂⁻¹vec, var)]`, looked up at
        every step (tests wrap it).
      velocities, norm_constraint (or None), quadratic_model, adaptation, guard,
        statistics: the optimizer's parts.
      learning_rate_as: `dtype -> η` in that dtype.
    """

    def __init__(self, momentum_type: str, momentum: Any,
                 estimator: Any,
                 velocities: Velocities, norm_constraint: Optional[NormConstraint],
                 quadratic_model: QuadraticModel, adaptation: DampingAdaptation,
                 guard: NonFiniteGuard, statistics: StepStatistics,
                 learning_rate_as: Callable[[tf.DType], tf.Tensor]) -> None:
        self._momentum_type = momentum_type
        self._momentum = momentum
        self._estimator = estimator
        self._velocities = velocities
        self._norm_constraint = norm_constraint
        self._quadratic_model = quadratic_model
        self._adaptation = adaptation
        self._guard = guard
        self._statistics = statistics
        self._learning_rate_as = learning_rate_as

    def steps(self, grads_and_vars: VarsAndVectors) -> VarsAndVectors:
        """`[(step, var)]` for the momentum type (module doc)."""
        if self._momentum_type == "regular":
            precon_grads_and_vars = self._estimator.multiply_inverse(grads_and_vars)
            directions_and_vars = precon_grads_and_vars
            clip_coefficient = None
            if self._norm_constraint is not None:
                clip_coefficient = self._norm_constraint.coefficient(
                    grads_and_vars, precon_grads_and_vars)
                precon_grads_and_vars = scale_vectors(precon_grads_and_vars,
                                                      clip_coefficient)
            dependencies = []
            coefficients = None
            if self._adaptation.adapting:
                alpha, mu, q_model_change = self.qmodel_step(grads_and_vars,
                                                             precon_grads_and_vars)
                dependencies = [q_model_change]
                coefficients = (alpha, mu)
            self._statistics.record(grads_and_vars, directions_and_vars, coefficients,
                                    clip_coefficient)
            with tf.control_dependencies(dependencies):
                return self._velocities.update(precon_grads_and_vars, self._momentum)

        if self._momentum_type == "adam":
            velocities_and_vars = self._velocities.update(grads_and_vars,
                                                          self._momentum)
            steps_and_vars = self._estimator.multiply_inverse(velocities_and_vars)
            coefficients = None
            if self._adaptation.adapting:
                # The velocity slot holds accumulated gradients, not the previous
                # update, so the model is taken along the step direction alone
                # (μ = 0).
                alpha, mu, q_model_change = self._quadratic_model.hyperparams(
                    [step for step, _ in steps_and_vars], None,
                    [grad for grad, _ in grads_and_vars],
                    [var for _, var in grads_and_vars])
                record = self._adaptation.record_model_change(q_model_change,
                                                              self._guard)
                coefficients = (alpha, mu)
                with tf.control_dependencies([record]):
                    steps_and_vars = [(_identity(step), var)
                                      for step, var in steps_and_vars]
            self._statistics.record(grads_and_vars, steps_and_vars, coefficients)
            return steps_and_vars

        precon_grads_and_vars = self._estimator.multiply_inverse(grads_and_vars)
        alpha, mu, q_model_change = self.qmodel_step(grads_and_vars,
                                                     precon_grads_and_vars)
        self._statistics.record(grads_and_vars, precon_grads_and_vars, (alpha, mu))
        with tf.control_dependencies([q_model_change]):
            return self._velocities.update(precon_grads_and_vars, mu, vec_coeff=-alpha)

    def qmodel_step(self, grads_and_vars: VarsAndVectors,
                    precon_grads_and_vars: VarsAndVectors) -> Tuple[Any, Any, Any]:
        """`(α, μ, op storing q)` with `Δ = p` and `δ` the previous update."""
        variables = [var for _, var in grads_and_vars]
        alpha, mu, q_model_change = self._quadratic_model.hyperparams(
            [pgrad for pgrad, _ in precon_grads_and_vars],
            self._velocities.previous_updates(variables, self._learning_rate_as),
            [grad for grad, _ in grads_and_vars], variables)
        record = self._adaptation.record_model_change(q_model_change, self._guard)
        return alpha, mu, record
