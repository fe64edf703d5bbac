"""Negative log-likelihood losses and products with their Fisher matrices.

A loss object represents `L = −Σ_b log p(y_b | z_b)`: the negative
log-likelihood of the targets summed (not averaged) over the batch axis 0,
as a function of the network outputs `z` (`inputs`, the natural parameters of
the predictive distribution where that applies).

Besides its value, a loss exposes products with curvature matrices of `L`
with respect to `z`, block-diagonal across cases (Martens & Grosse 2015, §5):
the Fisher `F = E_{y~p(·|z)}[∇_z log p ∇_z log pᵀ]`, the Hessian `H` (equal to
`F` for natural parameters of an exponential family) and a "factor" `B` with
`B Bᵀ = F`. `B` acts on vectors of the "inner" shape, which is the shape of
the inputs except for `NormalMeanVarianceNegativeLogProbLoss`. Every product
acts row-wise on the last axis, and vectors may carry extra leading
dimensions that broadcast against the parameters (e.g. a `[k, C]` stack of
vectors against a single `[C]` logits vector).

Per-case weights. Every concrete loss takes `weights=None`: non-negative
weights `v` of the loss's leading shape (`[batch]` for `[batch, C]` inputs,
`[batch, T]`, or `[batch]` broadcast over `T`, for `[batch, T, C]`; bool masks
become 0/1), one per case, a case being one row of the leading axes. The loss
is then `L = −Σ_b v_b log p(y_b | z_b)`, so:

* `evaluate()` is that weighted sum; `multiply_fisher` (and `multiply_hessian`)
  multiply case `b` by `v_b`: the Fisher of `L` is `v_b F_b` per case;
* the factor becomes `diag(√v) B`: `multiply_fisher_factor`, its transpose and
  `multiply_fisher_factor_replicated_one_hot` (and the Hessian-factor
  versions) multiply case `b` by `√v_b`, so that `B Bᵀ = v·F` still holds;
* `evaluate_on_sample()` is `−Σ_b √v_b log p(ỹ_b | z_b)`, `ỹ` drawn from the
  model, and `evaluate_for_empirical_fisher()` the same at the data targets:
  a per-case gradient `g_b` of these has `g_b g_bᵀ` scaled by `v_b`, so
  `E[g_b g_bᵀ] = v_b F_b` ("gradients" estimation mode) and the empirical
  Fisher is `Σ_b v_b ∇ℓ_b ∇ℓ_bᵀ` ("empirical" mode).

A zero weight removes a case from the loss and from every product; a weight of
2 counts it twice. Without weights every product is built exactly as before.
The `register_*_predictive_distribution` methods check the weights (shape,
finite, non-negative); the loss constructors only cast them.

Parameters, targets and vectors may be Tensors or numpy arrays. The
distributions (log-probabilities and seeded sampling) are the small in-project
classes of `kfac.ops._losses.distributions`; the families live in
`kfac/ops/_losses/`, and this module re-exports them.
"""

from kfac.ops._losses.base import DistributionNegativeLogProbLoss
from kfac.ops._losses.base import LossFunction
from kfac.ops._losses.base import NaturalParamsNegativeLogProbLoss
from kfac.ops._losses.base import NegativeLogProbLoss
from kfac.ops._losses.helpers import insert_slice_in_zeros
from kfac.ops._losses.logits import CategoricalLogitsNegativeLogProbLoss
from kfac.ops._losses.logits import MultiBernoulliNegativeLogProbLoss
from kfac.ops._losses.logits import OnehotCategoricalLogitsNegativeLogProbLoss
from kfac.ops._losses.normal import NormalMeanNegativeLogProbLoss
from kfac.ops._losses.normal import NormalMeanVarianceNegativeLogProbLoss

__all__ = [
    "LossFunction",
    "NegativeLogProbLoss",
    "NaturalParamsNegativeLogProbLoss",
    "DistributionNegativeLogProbLoss",
    "NormalMeanNegativeLogProbLoss",
    "NormalMeanVarianceNegativeLogProbLoss",
    "CategoricalLogitsNegativeLogProbLoss",
    "OnehotCategoricalLogitsNegativeLogProbLoss",
    "MultiBernoulliNegativeLogProbLoss",
    "insert_slice_in_zeros",
]
