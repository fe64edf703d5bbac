"""Exact curvature-matrix-vector products for a sum of losses.

For the total loss `L = Σ_l L_l(z_l)`, each `L_l` a `loss_functions` loss summed
over its batch with inputs `z_l`, and parameters `θ` (`wrt_tensors`):

* Fisher: `F = Jᵀ F_z J`, where `J = ∂z/∂θ` (all loss inputs concatenated) and
  `F_z` is block-diagonal with each loss's Fisher w.r.t. its inputs;
* generalized Gauss-Newton: `G = Jᵀ H_z J`, `H_z` the losses' Hessians w.r.t.
  their inputs (Schraudolph 2002; Martens & Grosse 2015, §2);
* Hessian: the exact `∇²_θ L`;
* factors: with `B_l B_lᵀ = F_l`, `F = (Jᵀ B)(Jᵀ B)ᵀ`.

No damping and no batch normalisation are applied. `J` holds partial
derivatives: backpropagation stops at `wrt_tensors`, so they are treated as
independent even when one is computed from another.
"""

from typing import List
from typing import Sequence
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops import utils

__all__ = ["CurvatureMatrixVectorProductComputer"]


def _zeros_for_missing(grads, tensors) -> List[tf.Tensor]:
    """Gradients with None replaced by zeros and IndexedSlices densified."""
    return [
        tf.zeros_like(tensor)
        if grad is None
        else tf.convert_to_tensor(grad)
        if isinstance(grad, tf.IndexedSlices)
        else grad
        for grad, tensor in zip(grads, tensors)
    ]


class CurvatureMatrixVectorProductComputer(object):
    """Products of curvature matrices of `Σ losses` w.r.t. `wrt_tensors`.

    Args:
      losses: sequence of `loss_functions.LossFunction` objects.
      wrt_tensors: the tensors (usually variables) the matrices refer to; a
        single tensor is treated as a one-element list.

    Vectors in parameter space are lists aligned with `wrt_tensors`; "inner"
    vectors are sequences with one entry per loss, shaped like that loss's
    factor inner shape.
    """

    def __init__(self, losses: Sequence, wrt_tensors):
        self._losses = tuple(losses)
        self._inputs_to_losses = [loss.inputs for loss in self._losses]
        self._inputs_to_losses_flat = tf.nest.flatten(self._inputs_to_losses)
        self._wrt_tensors = (
            list(wrt_tensors)
            if isinstance(wrt_tensors, (list, tuple))
            else [wrt_tensors]
        )

    # -- argument handling --------------------------------------------------

    def _parameter_vectors(self, vecs) -> List:
        vecs = list(vecs) if isinstance(vecs, (list, tuple)) else [vecs]
        if len(vecs) != len(self._wrt_tensors):
            raise ValueError(
                "vecs must have one entry per wrt tensor ({}), got {}.".format(
                    len(self._wrt_tensors), len(vecs)
                )
            )
        return vecs

    def _per_loss(self, loss_vecs, name: str) -> Sequence:
        if len(loss_vecs) != len(self._losses):
            raise ValueError(
                "{} must have one entry per loss ({}), got {}.".format(
                    name, len(self._losses), len(loss_vecs)
                )
            )
        return loss_vecs

    # -- pieces -------------------------------------------------------------

    @property
    def _total_loss(self) -> tf.Tensor:
        """`Σ_l L_l` at the losses' targets (`evaluate()`)."""
        return tf.add_n([loss.evaluate() for loss in self._losses])

    def _multiply_jacobian(self, vecs) -> List:
        """`J v`, packed like the losses' inputs (forward mode)."""
        jacobian_vecs_flat = utils.fwd_gradients(
            self._inputs_to_losses_flat,
            self._wrt_tensors,
            grad_xs=self._parameter_vectors(vecs),
            stop_gradients=self._wrt_tensors,
        )
        return tf.nest.pack_sequence_as(self._inputs_to_losses, jacobian_vecs_flat)

    def _multiply_jacobian_transpose(self, loss_vecs) -> List[tf.Tensor]:
        """`Jᵀ u` for `u` packed like the losses' inputs (reverse mode)."""
        flat_loss_vecs = tf.nest.flatten(loss_vecs)
        grads = tf.gradients(
            self._inputs_to_losses_flat,
            self._wrt_tensors,
            grad_ys=flat_loss_vecs,
            stop_gradients=self._wrt_tensors,
        )
        return _zeros_for_missing(grads, self._wrt_tensors)

    def _multiply_loss_fisher(self, loss_vecs) -> Tuple:
        return tuple(
            loss.multiply_fisher(vec) for loss, vec in zip(self._losses, loss_vecs)
        )

    def _multiply_loss_fisher_factor(self, loss_inner_vecs) -> Tuple:
        return tuple(
            loss.multiply_fisher_factor(vec)
            for loss, vec in zip(self._losses, loss_inner_vecs)
        )

    def _multiply_loss_fisher_factor_transpose(self, loss_vecs) -> Tuple:
        return tuple(
            loss.multiply_fisher_factor_transpose(vec)
            for loss, vec in zip(self._losses, loss_vecs)
        )

    def _multiply_loss_hessian(self, loss_vecs) -> Tuple:
        return tuple(
            loss.multiply_hessian(vec) for loss, vec in zip(self._losses, loss_vecs)
        )

    def _multiply_loss_hessian_factor(self, loss_inner_vecs) -> Tuple:
        return tuple(
            loss.multiply_hessian_factor(vec)
            for loss, vec in zip(self._losses, loss_inner_vecs)
        )

    def _multiply_loss_hessian_factor_transpose(self, loss_vecs) -> Tuple:
        return tuple(
            loss.multiply_hessian_factor_transpose(vec)
            for loss, vec in zip(self._losses, loss_vecs)
        )

    # -- Fisher ------------------------------------------------------------

    def multiply_fisher(self, vecs) -> List[tf.Tensor]:
        """`Jᵀ F_z J v`; `vecs` and the result are aligned with `wrt_tensors`."""
        jacobian_vecs = self._multiply_jacobian(vecs)
        return self._multiply_jacobian_transpose(
            self._multiply_loss_fisher(jacobian_vecs)
        )

    def multiply_fisher_factor_transpose(self, vecs) -> Tuple:
        """`B_lᵀ J_l v` for every loss `l`: a tuple of inner-shaped tensors."""
        return self._multiply_loss_fisher_factor_transpose(
            self._multiply_jacobian(vecs)
        )

    def multiply_fisher_factor(self, loss_inner_vecs) -> List[tf.Tensor]:
        """`Σ_l J_lᵀ B_l u_l` for inner-shaped `u_l`; aligned with `wrt_tensors`.

        The original applied `B_lᵀ` here (a bug for non-symmetric factors such
        as the categorical one, §12); this port applies `B_l`, so that
        `multiply_fisher_factor(multiply_fisher_factor_transpose(v)) == F v`.
        """
        loss_inner_vecs = self._per_loss(loss_inner_vecs, "loss_inner_vecs")
        return self._multiply_jacobian_transpose(
            self._multiply_loss_fisher_factor(loss_inner_vecs)
        )

    # -- Hessian and generalized Gauss-Newton ------------------------------

    def multiply_hessian(self, vecs) -> List[tf.Tensor]:
        """`∇²_θ L · v` by double backpropagation (needs every loss's targets)."""
        vecs = self._parameter_vectors(vecs)
        grads = _zeros_for_missing(
            tf.gradients(
                self._total_loss, self._wrt_tensors, stop_gradients=self._wrt_tensors
            ),
            self._wrt_tensors,
        )
        grad_dot_vec = tf.add_n(
            [
                tf.reduce_sum(grad * tf.stop_gradient(tf.cast(vec, grad.dtype)))
                for grad, vec in zip(grads, vecs)
            ]
        )
        return _zeros_for_missing(
            tf.gradients(
                grad_dot_vec, self._wrt_tensors, stop_gradients=self._wrt_tensors
            ),
            self._wrt_tensors,
        )

    def multiply_generalized_gauss_newton(self, vecs) -> List[tf.Tensor]:
        """`Jᵀ H_z J v`; `vecs` and the result are aligned with `wrt_tensors`."""
        jacobian_vecs = self._multiply_jacobian(vecs)
        return self._multiply_jacobian_transpose(
            self._multiply_loss_hessian(jacobian_vecs)
        )

    def multiply_generalized_gauss_newton_factor_transpose(self, vecs) -> Tuple:
        """`B_{H,l}ᵀ J_l v` for every loss `l`: a tuple of inner-shaped tensors."""
        return self._multiply_loss_hessian_factor_transpose(
            self._multiply_jacobian(vecs)
        )

    def multiply_generalized_gauss_newton_factor(self, loss_inner_vecs) -> List:
        """`Σ_l J_lᵀ B_{H,l} u_l` (`B_H`, not `B_Hᵀ` as in the original, §12)."""
        loss_inner_vecs = self._per_loss(loss_inner_vecs, "loss_inner_vecs")
        return self._multiply_jacobian_transpose(
            self._multiply_loss_hessian_factor(loss_inner_vecs)
        )

    # -- shapes --------------------------------------------------------------

    @property
    def fisher_factor_inner_shapes(self) -> Tuple:
        """Each loss's dynamic `fisher_factor_inner_shape`."""
        return tuple(loss.fisher_factor_inner_shape for loss in self._losses)

    @property
    def generalized_gauss_newton_factor_inner_shapes(self) -> Tuple:
        """Each loss's dynamic `hessian_factor_inner_shape`."""
        return tuple(loss.hessian_factor_inner_shape for loss in self._losses)
