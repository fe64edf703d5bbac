"""Losses parametrised by logits: categorical (sparse and one-hot targets) and
independent Bernoullis."""

import tensorflow.compat.v1 as tf

from kfac.ops._losses import distributions
from kfac.ops._losses.base import DistributionNegativeLogProbLoss
from kfac.ops._losses.base import NaturalParamsNegativeLogProbLoss
from kfac.ops._losses.base import _CaseWeightsMixin
from kfac.ops._losses.base import _StoredTargetsMixin
from kfac.ops._losses.helpers import _as_tensor
from kfac.ops._losses.helpers import _check_index
from kfac.ops._losses.helpers import _last_dim
from kfac.ops._losses.helpers import _replicated_column


class _LogitsLossMixin(_StoredTargetsMixin, _CaseWeightsMixin):
    """What every loss parametrised by `logits` shares (first base of those losses).

    Stores the logits, targets and per-case weights, exposes them as
    `params`/`targets`/`weights`, builds `dist` from
    `_distribution_class(logits=...)` and gives the factor's inner shape, which
    is the shape of the logits.
    """

    _distribution_class = None  # set by each subclass

    def __init__(self, logits, targets=None, seed=None, weights=None):
        self._logits = _as_tensor(logits)
        self._targets = targets
        self._set_weights(weights, self._logits)
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

    `L = −Σ_b v_b log softmax(logits_b)[y_b]` (`v_b = 1` unless `weights` are
    given); per case, with `p = softmax(logits)` and `q = √p`:
    `F = v_b (diag(p) − p pᵀ)` and `B = √v_b (diag(q) − p qᵀ)` (not symmetric;
    `B Bᵀ = F` because `Σ_c p_c = 1`).

    Args:
      logits: `[batch, C]` logits (a single `[C]` vector also works), or
        `[batch, T, C]` (a case per position).
      targets: `[batch]` integer class ids, or None.
      seed: default sampling seed.
      weights: None, or non-negative per-case weights `v` of the leading shape
        of `logits` (`[batch]`, or `[batch, T]` or `[batch]` for
        `[batch, T, C]`); bools (masks) become 0/1.
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

    def _multiply_fisher_unweighted(self, vector):
        """`v∘p − p·Σ(v∘p)` (row-wise)."""
        probs = self._probs
        return self._scaled_minus_projected(vector, probs, probs, probs)

    def _multiply_fisher_factor_unweighted(self, vector):
        """`B v = q∘v − p·Σ(q∘v)` (row-wise)."""
        sqrt_probs = self._sqrt_probs
        return self._scaled_minus_projected(vector, sqrt_probs, self._probs, sqrt_probs)

    def _multiply_fisher_factor_transpose_unweighted(self, vector):
        """`Bᵀ v = q∘v − q·Σ(p∘v)` (row-wise)."""
        sqrt_probs = self._sqrt_probs
        return self._scaled_minus_projected(vector, sqrt_probs, sqrt_probs, self._probs)

    def _multiply_fisher_factor_replicated_one_hot_unweighted(self, index):
        """Column `i = index[0]` of `B` in every row: `q_i e_i − p q_i`."""
        depth = _last_dim(self._logits)
        index = _check_index(index, depth)
        probs = self._probs
        sqrt_probs_slice = self._sqrt_probs[..., index]
        padded = _replicated_column(sqrt_probs_slice, index, depth, self._logits.dtype)
        return padded - probs * sqrt_probs_slice[..., tf.newaxis]


class OnehotCategoricalLogitsNegativeLogProbLoss(CategoricalLogitsNegativeLogProbLoss):
    """Softmax cross-entropy with one-hot targets `[batch, C]`.

    `L = −Σ_b v_b Σ_c y_bc log softmax(logits_b)_c`; Fisher, factor and
    arguments as for `CategoricalLogitsNegativeLogProbLoss`. Samples are
    one-hot, logits dtype.
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

    `L = −Σ_b v_b Σ_i [y_bi log p_bi + (1−y_bi) log(1−p_bi)]`,
    `p = sigmoid(logits)`, `v_b = 1` unless `weights` are given; per case
    `F = v_b diag(p(1−p))`, `B = Bᵀ = √v_b diag(√(p(1−p)))`.

    Args:
      logits: `[batch, d]` log-odds.
      targets: `[batch, d]` 0/1 targets, or None.
      seed: default sampling seed.
      weights: None, or non-negative per-case weights `v`, `[batch]` (bools
        become 0/1).
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
        # √(p(1−p)) = e / (1 + e²) with e = exp(−|l|/2) ∈ (0, 1]: one exp,
        # no overflow or cancellation for any l.
        half_exp = tf.exp(-0.5 * tf.abs(self._logits))
        return half_exp / (1.0 + tf.square(half_exp))

    def _multiply_fisher_unweighted(self, vector):
        """`p(1−p)∘v`."""
        return self._fisher_diagonal * self._vector(vector)

    def _multiply_fisher_factor_unweighted(self, vector):
        """`√(p(1−p))∘v`."""
        return self._fisher_factor_diagonal * self._vector(vector)

    def _multiply_fisher_factor_transpose_unweighted(self, vector):
        """`√(p(1−p))∘v` (the factor is diagonal)."""
        return self._multiply_fisher_factor_unweighted(vector)

    def _multiply_fisher_factor_replicated_one_hot_unweighted(self, index):
        """Zeros like `logits` with column `index[0]` equal to `√(p(1−p))` there."""
        depth = _last_dim(self._logits)
        index = _check_index(index, depth)
        column = self._fisher_factor_diagonal[..., index]
        return _replicated_column(column, index, depth, self._logits.dtype)
