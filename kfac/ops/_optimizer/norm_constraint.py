"""KL clipping of the K-FAC update (Ba, Grosse & Martens 2017, §5).

The update of one step is `u = -η·p` with `p = F̂⁻¹ g`. Its squared Fisher norm is
`uᵀ F̂ u = η² pᵀ F̂ p = η² ⟨g, p⟩`, so the norm can be measured without another
Fisher product. Clipping rescales `p` by `κ = min(1, sqrt(C / (η² ⟨g, p⟩)))`, which
puts the update on the boundary `uᵀ F̂ u = C` when it would leave it.
"""

from typing import Any
from typing import Callable
from typing import List
from typing import Sequence
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops._optimizer.vectors import dense
from kfac.ops._optimizer.vectors import inner_product_list

VectorsAndVars = Sequence[Tuple[Any, Any]]


def check_same_variables(grads_and_vars: VectorsAndVars,
                         precon_grads_and_vars: VectorsAndVars) -> None:
    """Raises ValueError unless both lists pair the same variable objects in order."""
    if len(grads_and_vars) != len(precon_grads_and_vars):
        raise ValueError(
            "grads_and_vars and precon_grads_and_vars must have the same length; "
            "got {} and {}.".format(len(grads_and_vars), len(precon_grads_and_vars)))
    for position, ((_, var), (_, precon_var)) in enumerate(
            zip(grads_and_vars, precon_grads_and_vars)):
        if var is not precon_var:
            raise ValueError(
                "The variables referenced by grads_and_vars and precon_grads_and_vars "
                "must match position by position; at position {} got {} and {}.".format(
                    position, getattr(var, "name", var),
                    getattr(precon_var, "name", precon_var)))


def squared_fisher_norm(grads_and_vars: VectorsAndVars,
                        precon_grads_and_vars: VectorsAndVars) -> tf.Tensor:
    """`Σ_vars ⟨g, p⟩` = `pᵀ F̂ p` for `p = F̂⁻¹ g` (ValueError on mismatched vars)."""
    check_same_variables(grads_and_vars, precon_grads_and_vars)
    return inner_product_list([grad for grad, _ in grads_and_vars],
                              [pgrad for pgrad, _ in precon_grads_and_vars])


def clip_coefficient(sq_fisher_norm: tf.Tensor, learning_rate: Any,
                     norm_constraint: Any) -> tf.Tensor:
    """`κ = min(1, sqrt(C / (η² · sq_fisher_norm)))`.

    A zero norm gives `C/0 = inf` and therefore `κ = 1` (nothing to clip).
    """
    dtype = sq_fisher_norm.dtype
    learning_rate = tf.cast(learning_rate, dtype)
    sq_norm_update = sq_fisher_norm * learning_rate**2
    return tf.minimum(tf.ones([], dtype),
                      tf.sqrt(tf.cast(norm_constraint, dtype) / sq_norm_update))


def scale_vectors(vecs_and_vars: VectorsAndVars,
                  coeff: tf.Tensor) -> List[Tuple[Any, Any]]:
    """`[(coeff·v, var)]`."""
    return [(dense(vec) * tf.cast(coeff, dense(vec).dtype), var)
            for vec, var in vecs_and_vars]


class NormConstraint(object):
    """KL clipping of the preconditioned gradient for a constraint `C` > 0.

    Args:
      norm_constraint: `C`, a number or scalar Tensor.
      learning_rate_as: `dtype -> η` in that dtype, read when the op is built.
    """

    def __init__(self, norm_constraint: Any,
                 learning_rate_as: Callable[[tf.DType], tf.Tensor]) -> None:
        self._norm_constraint = norm_constraint
        self._learning_rate_as = learning_rate_as

    def coefficient(self, grads_and_vars: VectorsAndVars,
                    precon_grads_and_vars: VectorsAndVars) -> tf.Tensor:
        """`κ = min(1, sqrt(C / (η² Σ⟨g, p⟩)))`."""
        sq_norm = squared_fisher_norm(grads_and_vars, precon_grads_and_vars)
        return clip_coefficient(sq_norm, self._learning_rate_as(sq_norm.dtype),
                                self._norm_constraint)

    def clip(self, grads_and_vars: VectorsAndVars,
             precon_grads_and_vars: VectorsAndVars) -> List[Tuple[Any, Any]]:
        """`[(κ·p, var)]`."""
        coeff = self.coefficient(grads_and_vars, precon_grads_and_vars)
        return scale_vectors(precon_grads_and_vars, coeff)
