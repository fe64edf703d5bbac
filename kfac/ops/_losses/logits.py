"""Losses parametrised by logits: categorical (sparse and one-hot targets) and
independent Bernoullis."""

import tensorflow.compat.v1 as tf

from kfac.ops._losses import distributions
from kfac.ops._losses.base import DistributionNegativeLogProbLoss
from kfac.ops._losses.base import NaturalParamsNegativeLogProbLoss
from kfac.ops._losses.base import _StoredTargetsMixin
from kfac.ops._losses.helpers import _as_tensor
from kfac.ops._losses.helpers import _check_index
from kfac.ops._losses.helpers import _last_dim
from kfac.ops._losses.helpers import _replicated_column


class _LogitsLossMixin(_StoredTargetsMixin):
    """What every loss parametrised by `logits` shares (first base of those losses).

    Stores the logits and targets, exposes them as `params`/`targets`, builds
    `dist` from `_distribution_class(logits=...)` and gives the factor's inner
    shape, which is the shape of the logits.
    """

    _distribution_class = None  # set by each subclass

    def __init__(self, logits, targets=None, seed=None):
        self._logits = _as_tensor(logits)
        self._targets = targets
        super().__init__(seed=seed)

    @property
    def params(self):
        return self._logits

    @property
    def dist(self):
        return self._distribution_class(logits=self._logits)

    def _vector(self, vector):
        return _as_tensor(vector, self._logits.dtype)

    @property
    def fisher_factor_inner_shape(self):
        return tf.shape(self._logits)

    @property
    def fisher_factor_inner_static_shape(self):
        return self._logits.shape


class CategoricalLogitsNegativeLogProbLoss(
    _LogitsLossMixin, DistributionNegativeLogProbLoss, NaturalParamsNegativeLogProbLoss
):
    """Softmax cross-entropy with integer class targets.

    `L = −Σ_b log softmax(logits_b)[y_b]`; per case, with `p = softmax(logits)`
    and `q = √p`: `F = diag(p) − p pᵀ` and `B = diag(q) − p qᵀ` (not symmetric;
    `B Bᵀ = F` because `Σ_c p_c = 1`).

    Args:
      logits: `[batch, C]` logits (a single `[C]` vector also works).
      targets: `[batch]` integer class ids, or None.
      seed: default sampling seed.
    """

    _distribution_class = distributions.Categorical

    @property
    def _probs(self):
        return tf.nn.softmax(self._logits)

    @property
    def _sqrt_probs(self):
        # exp(½ log p) stays accurate for tiny probabilities.
        return tf.exp(0.5 * tf.nn.log_softmax(self._logits))

    def _scaled_minus_projected(self, vector, scale, column, row):
        """`scale∘v − column·Σ(row∘v)`, row-wise: the shape of `F`, `B` and `Bᵀ`."""
        vector = self._vector(vector)
        return scale * vector - column * tf.reduce_sum(
            row * vector, axis=-1, keepdims=True
        )

    def multiply_fisher(self, vector):
        """`v∘p − p·Σ(v∘p)` (row-wise)."""
        probs = self._probs
        return self._scaled_minus_projected(vector, probs, probs, probs)

    def multiply_fisher_factor(self, vector):
        """`B v = q∘v − p·Σ(q∘v)` (row-wise)."""
        sqrt_probs = self._sqrt_probs
        return self._scaled_minus_projected(vector, sqrt_probs, self._probs, sqrt_probs)

    def multiply_fisher_factor_transpose(self, vector):
        """`Bᵀ v = q∘v − q·Σ(p∘v)` (row-wise)."""
        sqrt_probs = self._sqrt_probs
        return self._scaled_minus_projected(vector, sqrt_probs, sqrt_probs, self._probs)

    def multiply_fisher_factor_replicated_one_hot(self, index):
        """Column `i = index[0]` of `B` in every row: `q_i e_i − p q_i`."""
        depth = _last_dim(self._logits)
        index = _check_index(index, depth)
        probs = self._probs
        sqrt_probs_slice = self._sqrt_probs[..., index]
        padded = _replicated_column(sqrt_probs_slice, index, depth, self._logits.dtype)
        return padded - probs * sqrt_probs_slice[..., tf.newaxis]


class OnehotCategoricalLogitsNegativeLogProbLoss(CategoricalLogitsNegativeLogProbLoss):
    """Softmax cross-entropy with one-hot targets `[batch, C]`.

    `L = −Σ_b Σ_c y_bc log softmax(logits_b)_c`; Fisher and factor as for
    `CategoricalLogitsNegativeLogProbLoss`. Samples are one-hot, logits dtype.
    """

    @property
    def dist(self):
        return distributions.OneHotCategorical(
            logits=self._logits, dtype=self._logits.dtype
        )


class MultiBernoulliNegativeLogProbLoss(
    _LogitsLossMixin, DistributionNegativeLogProbLoss, NaturalParamsNegativeLogProbLoss
):
    """Summed sigmoid cross-entropy: independent Bernoulli outputs.

    `L = −Σ [y log p + (1−y) log(1−p)]`, `p = sigmoid(logits)`; per case
    `F = diag(p(1−p))`, `B = Bᵀ = diag(√(p(1−p)))`.

    Args:
      logits: `[batch, d]` log-odds.
      targets: `[batch, d]` 0/1 targets, or None.
      seed: default sampling seed.
    """

    _distribution_class = distributions.Bernoulli

    @property
    def _probs(self):
        return tf.sigmoid(self._logits)

    @property
    def _fisher_diagonal(self):
        # p(1−p) = sigmoid(l)·sigmoid(−l): no cancellation for large |l|.
        return tf.sigmoid(self._logits) * tf.sigmoid(-self._logits)

    @property
    def _fisher_factor_diagonal(self):
        # √(p(1−p)) = exp(−½(softplus(l) + softplus(−l))), stable for large |l|.
        return tf.exp(
            -0.5 * (tf.nn.softplus(self._logits) + tf.nn.softplus(-self._logits))
        )

    def multiply_fisher(self, vector):
        """`p(1−p)∘v`."""
        return self._fisher_diagonal * self._vector(vector)

    def multiply_fisher_factor(self, vector):
        """`√(p(1−p))∘v`."""
        return self._fisher_factor_diagonal * self._vector(vector)

    def multiply_fisher_factor_transpose(self, vector):
        """`√(p(1−p))∘v` (the factor is diagonal)."""
        return self.multiply_fisher_factor(vector)

    def multiply_fisher_factor_replicated_one_hot(self, index):
        """Zeros like `logits` with column `index[0]` equal to `√(p(1−p))` there."""
        depth = _last_dim(self._logits)
        index = _check_index(index, depth)
        column = self._fisher_factor_diagonal[..., index]
        return _replicated_column(column, index, depth, self._logits.dtype)
