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
