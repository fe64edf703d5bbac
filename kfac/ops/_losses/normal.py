"""Gaussian negative log-likelihoods: predicted mean (fixed variance), and
predicted mean and variance."""

import math
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops._losses import distributions
from kfac.ops._losses.base import DistributionNegativeLogProbLoss
from kfac.ops._losses.base import NaturalParamsNegativeLogProbLoss
from kfac.ops._losses.base import _CaseWeightsMixin
from kfac.ops._losses.base import _StoredTargetsMixin
from kfac.ops._losses.helpers import _as_tensor
from kfac.ops._losses.helpers import _check_index
from kfac.ops._losses.helpers import _ContractAssertionError
from kfac.ops._losses.helpers import _last_dim
from kfac.ops._losses.helpers import _replicated_column


class NormalMeanNegativeLogProbLoss(
    _StoredTargetsMixin,
    _CaseWeightsMixin,
    DistributionNegativeLogProbLoss,
    NaturalParamsNegativeLogProbLoss,
):
    """Gaussian NLL with a predicted mean and a fixed variance.

    `L = Σ_b v_b Σ_i [(y_bi − mean_bi)²/(2 var) + ½ log(2π var)]` (`v_b = 1`
    unless `weights` are given); per case `F = v_b I/var` and
    `B = Bᵀ = √v_b var^{-1/2} I`. `var=0.5` matches the loss `Σ (y − mean)²`.

    Args:
      mean: `[batch, d]` predicted means (the natural parameters, up to `var`).
      var: scalar variance (float or scalar tensor).
      targets: `[batch, d]` real targets, or None.
      seed: default sampling seed.
      weights: None, or non-negative per-case weights `v`, `[batch]` (bools
        become 0/1).
    """

    def __init__(self, mean, var=0.5, targets=None, seed=None, weights=None):
        self._mean = _as_tensor(mean)
        self._var = var
        self._targets = targets
        self._set_weights(weights, self._mean)
        super().__init__(seed=seed)

    @property
    def params(self):
        return self._mean

    @property
    def _var_tensor(self) -> tf.Tensor:
        # A Python float goes straight to the mean's dtype (no float32 rounding).
        return tf.cast(_as_tensor(self._var, self._mean.dtype), self._mean.dtype)

    @property
    def dist(self):
        return distributions.Normal(self._mean, tf.sqrt(self._var_tensor))

    def _vector(self, vector):
        return _as_tensor(vector, self._mean.dtype)

    def _multiply_fisher_unweighted(self, vector):
        """`v / var`."""
        return self._vector(vector) / self._var_tensor

    def _multiply_fisher_factor_unweighted(self, vector):
        """`v · var^{-1/2}`."""
        return self._vector(vector) * tf.math.rsqrt(self._var_tensor)

    def _multiply_fisher_factor_transpose_unweighted(self, vector):
        """`v · var^{-1/2}` (the factor is symmetric)."""
        return self._multiply_fisher_factor_unweighted(vector)

    def _multiply_fisher_factor_replicated_one_hot_unweighted(self, index):
        """Zeros like `mean` with column `index[0]` equal to `var^{-1/2}`."""
        depth = _last_dim(self._mean)
        index = _check_index(index, depth)
        column = tf.ones_like(self._mean[..., 0]) * tf.math.rsqrt(self._var_tensor)
        return _replicated_column(column, index, depth, self._mean.dtype)

    @property
    def fisher_factor_inner_shape(self):
        return tf.shape(self._mean)

    @property
    def fisher_factor_inner_static_shape(self):
        return self._mean.shape


class NormalMeanVarianceNegativeLogProbLoss(
    _StoredTargetsMixin, _CaseWeightsMixin, DistributionNegativeLogProbLoss
):
    """Gaussian NLL with predicted mean and variance (not natural parameters).

    `L = −Σ_b v_b log N(y_b; mean_b, diag(σ_b²))` (`v_b = 1` unless `weights`
    are given). Per case, on `[mean; variance]` (`σ² = variance`):
    `F = v_b diag(1/σ², 1/(2σ⁴))`, `B = √v_b diag(1/σ, 1/(√2 σ²))`. The
    factor's inner vectors are `[batch, 2d]`: the mean half then the variance
    half. The Hessian is not a Fisher here and is not implemented.

    Args:
      mean: `[batch, d]` predicted means.
      variance: `[batch, d]` predicted variances (positive).
      targets: `[batch, d]` real targets, or None.
      seed: default sampling seed.
      weights: None, or non-negative per-case weights `v`, `[batch]` (bools
        become 0/1).

    Raises:
      AssertionError (also a ValueError): if `mean` or `variance` is not 2-D.
    """

    def __init__(self, mean, variance, targets=None, seed=None, weights=None):
        mean = _as_tensor(mean)
        variance = _as_tensor(variance, mean.dtype)
        for name, value in (("mean", mean), ("variance", variance)):
            if value.shape.rank != 2:
                raise _ContractAssertionError(
                    "Expected a 2-D {} tensor [batch, d], got shape {}.".format(
                        name, value.shape
                    )
                )
        self._mean = mean
        self._variance = variance
        self._targets = targets
        self._set_weights(weights, mean)
        super().__init__(seed=seed)

    @property
    def params(self) -> Tuple[tf.Tensor, tf.Tensor]:
        return self._mean, self._variance

    @property
    def dist(self):
        return distributions.Normal(self._mean, tf.sqrt(self._variance))

    @property
    def _fisher_mean(self):
        return 1.0 / self._variance

    @property
    def _fisher_mean_factor(self):
        return tf.math.rsqrt(self._variance)

    @property
    def _fisher_var(self):
        return 1.0 / (2.0 * tf.square(self._variance))

    @property
    def _fisher_var_factor(self):
        return 1.0 / (math.sqrt(2.0) * self._variance)

    def _vectors(self, vecs):
        mean_vec, var_vec = vecs
        dtype = self._mean.dtype
        return _as_tensor(mean_vec, dtype), _as_tensor(var_vec, dtype)

    def _multiply_fisher_unweighted(self, vecs):
        """`(v_mean/σ², v_var/(2σ⁴))` for a tuple `(v_mean, v_var)`."""
        mean_vec, var_vec = self._vectors(vecs)
        return self._fisher_mean * mean_vec, self._fisher_var * var_vec

    def _multiply_fisher_factor_unweighted(self, vecs):
        """`(v₁/σ, v₂/(√2σ²))` for the halves of a `[..., 2d]` inner vector."""
        mean_vec, var_vec = tf.split(_as_tensor(vecs, self._mean.dtype), 2, axis=-1)
        return self._fisher_mean_factor * mean_vec, self._fisher_var_factor * var_vec

    def _multiply_fisher_factor_transpose_unweighted(self, vecs):
        """`concat([v_mean/σ, v_var/(√2σ²)], -1)` for a tuple `(v_mean, v_var)`."""
        mean_vec, var_vec = self._vectors(vecs)
        return tf.concat(
            [self._fisher_mean_factor * mean_vec, self._fisher_var_factor * var_vec],
            axis=-1,
        )

    def _multiply_fisher_factor_replicated_one_hot_unweighted(self, index):
        """Column `index[0]` of `B` in every row, as a `(mean, variance)` tuple.

        `index < d` selects the mean part (`1/σ`), otherwise the variance part
        (`1/(√2σ²)`, column `index − d`).
        """
        size = tf.compat.dimension_value(self._mean.shape[-1])
        if size is None:
            raise ValueError("mean needs a static last dimension for this product.")
        index = _check_index(index, 2 * size)
        dtype = self._mean.dtype
        if index < size:
            column = self._fisher_mean_factor[..., index]
            mean_output = _replicated_column(column, index, size, dtype)
            return mean_output, tf.zeros_like(mean_output)
        column = self._fisher_var_factor[..., index - size]
        var_output = _replicated_column(column, index - size, size, dtype)
        return tf.zeros_like(var_output), var_output

    @property
    def fisher_factor_inner_shape(self):
        """`[batch…, 2d]` as a 1-D int tensor."""
        shape = tf.shape(self._mean)
        return tf.concat([shape[:-1], 2 * shape[-1:]], axis=0)

    @property
    def fisher_factor_inner_static_shape(self):
        """`[batch, 2d]` (the original returned `[d, 2d]`; only `[1:]` is used, §12)."""
        shape = self._mean.shape.as_list()
        last = None if shape[-1] is None else 2 * shape[-1]
        return tf.TensorShape(shape[:-1] + [last])

    def _hessian_not_implemented(self, *unused_args):
        raise NotImplementedError(
            "NormalMeanVarianceNegativeLogProbLoss does not parametrise the "
            "distribution by natural parameters; its Hessian is not available."
        )

    multiply_hessian = _hessian_not_implemented
    multiply_hessian_factor = _hessian_not_implemented
    multiply_hessian_factor_transpose = _hessian_not_implemented
    multiply_hessian_factor_replicated_one_hot = _hessian_not_implemented

    @property
    def hessian_factor_inner_shape(self):
        return self._hessian_not_implemented()

    @property
    def hessian_factor_inner_static_shape(self):
        return self._hessian_not_implemented()
