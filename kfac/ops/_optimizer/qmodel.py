"""The 2-D quadratic model of K-FAC (Martens & Grosse 2015, §6.4 and §7).

Given the gradient `g`, the preconditioned gradient `Δ = F̂⁻¹ g` and the previous
update `δ`, the step is `αΔ + μδ` with `(α, μ)` minimising the local quadratic model

    M(α, μ) = [α, μ] c + ½ [α, μ] M [α, μ]ᵀ,
    c = [⟨g, Δ⟩, ⟨g, δ⟩],
    M = [[ΔᵀCΔ, ΔᵀCδ], [δᵀCΔ, δᵀCδ]],   C = JᵀFJ / n + λI,

where `JᵀFJ / n` is the exact Fisher of the mean mini-batch loss (`n` the batch
size). Products with it are formed as `⟨Bᵀ J x, Bᵀ J y⟩` with `B` the loss's Fisher
factor (`F = B Bᵀ`), so only `Bᵀ J Δ` and `Bᵀ J δ` are needed.
"""

from typing import Any
from typing import Callable
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops._optimizer.vectors import dense
from kfac.ops._optimizer.vectors import inner_product_list
from kfac.ops._utils import forward_mode


def _loss_inputs(loss) -> Tuple[tf.Tensor, ...]:
    inputs = loss.inputs
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def fisher_factor_transpose_products(
        losses: Sequence[Any], variables: Sequence[Any],
        vectors_list: Sequence[Sequence[Any]],
        colocate_gradients_with_ops: bool = True) -> List[Tuple[tf.Tensor, ...]]:
    """`Bᵀ J v` for each list `v` of parameter-shaped vectors in `vectors_list`.

    `J` is the Jacobian of all loss inputs w.r.t. `variables` and `B` each loss's
    Fisher factor; the same numbers as
    `CurvatureMatrixVectorProductComputer(losses, variables)
    .multiply_fisher_factor_transpose(v)`.

    `J v` is formed by one forward-mode walk of the graph carrying every list
    of `vectors_list` (`_utils.forward_mode`): for a dense layer `s = aW + b`,
    `ṡ = ȧW + aẆ + ḃ`, two products per layer and list, and nothing else (the
    double-backprop trick used before also ran a whole backward pass on dummy
    cotangents, because its second pass reads their run-time shapes).

    Args:
      losses: the loss objects (`LayerCollection.losses`).
      variables: the variables `J` is taken with respect to.
      vectors_list: lists of vectors, each aligned with `variables`.
      colocate_gradients_with_ops: forwarded to `tf.gradients`.

    Returns:
      One tuple per entry of `vectors_list`, holding one inner-shaped tensor per loss.
    """
    inputs_per_loss = [_loss_inputs(loss) for loss in losses]
    outputs = [tensor for inputs in inputs_per_loss for tensor in inputs]
    jvps_list = forward_mode.jacobian_vector_products(
        outputs, variables, vectors_list,
        colocate_gradients_with_ops=colocate_gradients_with_ops)

    products = []
    for jvps in jvps_list:
        per_loss = []
        start = 0
        for loss, inputs in zip(losses, inputs_per_loss):
            loss_jvps = jvps[start:start + len(inputs)]
            start += len(inputs)
            if not isinstance(loss.inputs, (tuple, list)):
                loss_jvps = loss_jvps[0]
            else:
                loss_jvps = tuple(loss_jvps)
            per_loss.append(loss.multiply_fisher_factor_transpose(loss_jvps))
        products.append(tuple(per_loss))
    return products


def two_by_two_solve(m: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
    """`M⁻¹ c` for a 2×2 matrix `m` and a `[2, k]` right-hand side `c`.

    By the closed form `M⁻¹ = [[m₂₂, −m₁₂], [−m₂₁, m₁₁]] / det M` rather than
    `tf.linalg.inv`, which raises a run-time "Input is not invertible" error for
    a singular or NaN `M` (e.g. a diverged step): here the result is then
    non-finite, and the optimizer's non-finite guard skips the step.
    """
    m = tf.convert_to_tensor(m)
    determinant = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    adjugate = tf.stack([tf.stack([m[1, 1], -m[0, 1]]),
                         tf.stack([-m[1, 0], m[0, 0]])])
    return tf.matmul(adjugate, c) / determinant


def quadratic_model_hyperparams(
        grads: Sequence[Any], precon_grads: Sequence[Any], prev_updates: Any,
        precon_grads_products: Sequence[tf.Tensor], prev_updates_products: Any,
        damping: Any, batch_size: Any) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """`(α, μ, q)`: the minimiser of the quadratic model and its predicted change.

    With `u = Bᵀ J Δ`, `w = Bᵀ J δ`, `n` the batch size and `λ` the damping:
    `m11 = ⟨u,u⟩/n + λ⟨Δ,Δ⟩`, `m12 = ⟨w,u⟩/n + λ⟨δ,Δ⟩`, `m22 = ⟨w,w⟩/n + λ⟨δ,δ⟩`.
    If `m22 == 0` (no previous update; chosen by `tf.cond`): `α = −⟨g,Δ⟩/m11`, `μ = 0`,
    `q = ½ α ⟨g,Δ⟩`. Otherwise `[α, μ]ᵀ = −M⁻¹ c` and `q = ½ [α, μ]·c`.

    Args:
      grads: the gradients `g`, aligned with the variables.
      precon_grads: `Δ`, aligned with the variables.
      prev_updates: `δ`, aligned with the variables, or None when there is no
        previous-update direction (then only the `μ = 0` case is built).
      precon_grads_products: `u`, one tensor per loss.
      prev_updates_products: `w`, one tensor per loss (None with `prev_updates`).
      damping: `λ` (number, Tensor or variable).
      batch_size: `n` (number or Tensor).

    Returns:
      Scalars `(α, μ, q)` in the dtype of the gradients.
    """
    grads = [dense(grad) for grad in grads]
    precon_grads = [dense(pgrad) for pgrad in precon_grads]
    dtype = grads[0].dtype.base_dtype
    batch_size = tf.cast(batch_size, dtype)
    damping = tf.cast(damping, dtype)

    def model_entry(products1, products2, vectors1, vectors2):
        fisher_term = tf.cast(inner_product_list(products1, products2), dtype)
        damping_term = damping * inner_product_list(vectors1, vectors2)
        return fisher_term / batch_size + damping_term

    m11 = model_entry(precon_grads_products, precon_grads_products,
                      precon_grads, precon_grads)
    c1 = inner_product_list(grads, precon_grads)

    def no_previous_update_case():
        alpha = -c1 / m11
        return alpha, tf.zeros([], dtype), 0.5 * alpha * c1

    if prev_updates is None:
        return no_previous_update_case()

    prev_updates = [dense(update) for update in prev_updates]
    m12 = model_entry(prev_updates_products, precon_grads_products,
                      prev_updates, precon_grads)
    m22 = model_entry(prev_updates_products, prev_updates_products,
                      prev_updates, prev_updates)
    c2 = inner_product_list(grads, prev_updates)

    def general_case():
        m = tf.stack([tf.stack([m11, m12]), tf.stack([m12, m22])])
        c = tf.reshape(tf.stack([c1, c2]), [2, 1])
        solution = -two_by_two_solve(m, c)
        alpha, mu = solution[0, 0], solution[1, 0]
        return alpha, mu, 0.5 * tf.reduce_sum(solution * c)

    return tf.cond(tf.equal(m22, 0.0), no_previous_update_case, general_case)


class QuadraticModel(object):
    """The quadratic model of one optimizer over its layer collection's losses.

    Args:
      layer_collection: its `losses` (read when the model is built) give `B`, `J`.
      batch_size: `n` (number or Tensor), or None (then building fails).
      damping: `() -> λ`, read when the model is built (it may be adapted).
      colocate_gradients_with_ops: forwarded to `tf.gradients`.
    """

    def __init__(self, layer_collection: Any, batch_size: Any,
                 damping: Callable[[], Any],
                 colocate_gradients_with_ops: bool) -> None:
        self._layers = layer_collection
        self._batch_size = batch_size
        self._damping = damping
        self._colocate_gradients_with_ops = colocate_gradients_with_ops

    def hyperparams(
            self, precon_grads: Sequence[Any], prev_updates: Optional[Sequence[Any]],
            grads: Sequence[Any],
            variables: Sequence[Any]) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`(α, μ, q)` of `quadratic_model_hyperparams` with the exact mini-batch
        Fisher products of the losses (one shared forward-mode walk).
        `prev_updates=None` means no previous-update direction (`μ = 0`)."""
        if self._batch_size is None:
            raise ValueError("batch_size is required to compute the quadratic model "
                             "(momentum_type 'qmodel' or damping adaptation).")
        vectors_list = [precon_grads]
        if prev_updates is not None:
            vectors_list.append(prev_updates)
        products = fisher_factor_transpose_products(
            self._layers.losses, variables, vectors_list,
            colocate_gradients_with_ops=self._colocate_gradients_with_ops)
        return quadratic_model_hyperparams(
            grads, precon_grads, prev_updates, products[0],
            products[1] if prev_updates is not None else None,
            self._damping(), self._batch_size)
