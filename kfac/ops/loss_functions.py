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
classes of `kfac.ops._distributions`.
"""

import abc
import math
from typing import Sequence
from typing import Tuple

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops import _distributions

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


class _ContractAssertionError(AssertionError, ValueError):
    """Bad argument where the original used `assert` (caught as either type)."""


def _as_tensor(value, dtype=None):
    """`value` itself if it is a Tensor/Variable, else a constant (numpy, lists).

    Tensors are returned unchanged so that `inputs` keeps the identity of the
    tensor the user registered (layer collections key on it). A non-tensor is
    converted with `dtype` when given (e.g. a float64 numpy vector multiplied
    with float32 logits).
    """
    if isinstance(value, (tf.Tensor, tf.Variable)) or tf.is_tensor(value):
        return value
    if dtype is not None:
        return tf.constant(np.asarray(value), dtype=dtype)
    return tf.convert_to_tensor(np.asarray(value))


def _check_index(index: Sequence[int], depth) -> int:
    """The single entry of `index`, checked against a last axis of size `depth`.

    Raises:
      AssertionError (also a ValueError): if `len(index) != 1`, as the original.
      ValueError: if the entry is outside `[0, depth)` (when `depth` is static).
    """
    if len(index) != 1:
        raise _ContractAssertionError(
            "Length of index was {}, expected 1 (one entry per non-batch axis of "
            "the factor's inner shape).".format(len(index))
        )
    position = index[0]
    if isinstance(depth, int) and not 0 <= position < depth:
        raise ValueError(
            "index[0] must be in [0, {}) for a last axis of size {}, got {}.".format(
                depth, depth, position
            )
        )
    return position


def _replicated_column(column: tf.Tensor, index: int, depth, dtype) -> tf.Tensor:
    """`column[..., None]` placed at `index` of a zero last axis of length `depth`.

    `column` has the batch shape (last axis removed). Equivalent to
    `insert_slice_in_zeros(column[..., None], -1, depth, index)`, but also works
    when `depth` is only known at run time.
    """
    return column[..., tf.newaxis] * tf.one_hot(index, depth, dtype=dtype)


def _last_dim(tensor: tf.Tensor):
    """Static size of the last axis as a Python int, else a scalar tensor."""
    size = tf.compat.dimension_value(tensor.shape[-1])
    return int(size) if size is not None else tf.shape(tensor)[-1]


def insert_slice_in_zeros(
    slice_to_insert: tf.Tensor, dim: int, dim_size: int, position: int
) -> tf.Tensor:
    """Pads a size-1 axis with zeros so that the slice sits at `position`.

    Example: `[[[1, 2]], [[3, 4]]]`, `dim=1`, `dim_size=2`, `position=0` gives
    `[[[1, 2], [0, 0]], [[3, 4], [0, 0]]]`.

    Args:
      slice_to_insert: tensor whose size along `dim` is 1 (static rank needed).
      dim: the axis to pad (negative values count from the end).
      dim_size: length of that axis in the result.
      position: index of the slice along that axis, `0 <= position < dim_size`.

    Returns:
      Tensor shaped like `slice_to_insert` except `dim_size` along `dim`.

    Raises:
      ValueError: if `slice_to_insert.shape[dim] != 1` or `position` is out of
        range.
    """
    slice_to_insert = _as_tensor(slice_to_insert)
    slice_shape = slice_to_insert.shape
    if slice_shape.rank is None:
        raise ValueError("slice_to_insert must have a static rank.")
    if tf.compat.dimension_value(slice_shape[dim]) != 1:
        raise ValueError(
            "Expected slice_to_insert.shape[{}] to be 1, but the shape was {}.".format(
                dim, slice_shape
            )
        )
    if not 0 <= position < dim_size:
        raise ValueError(
            "position must be in [0, dim_size={}), got {}.".format(dim_size, position)
        )
    paddings = [[0, 0] for _ in range(slice_shape.rank)]
    paddings[dim] = [position, dim_size - position - 1]
    return tf.pad(slice_to_insert, paddings)


# ---------------------------------------------------------------------------
# Abstract classes.


class LossFunction(abc.ABC):
    """Abstract loss `L(inputs; targets)`, summed over the batch (axis 0)."""

    @property
    @abc.abstractmethod
    def targets(self):
        """The targets (Tensor/array) given to the constructor, or None."""

    @property
    @abc.abstractmethod
    def inputs(self):
        """The network outputs the loss is a function of (backpropagated through)."""

    def evaluate(self) -> tf.Tensor:
        """The loss at the stored targets; no gradient flows into the targets.

        Raises:
          ValueError: if the loss was built without targets.
        """
        if self.targets is None:
            raise ValueError(
                "Cannot evaluate {}: targets unspecified (pass targets= to the "
                "constructor or to the register_*_predictive_distribution "
                "call).".format(type(self).__name__)
            )
        return self._evaluate(tf.stop_gradient(self.targets))

    @abc.abstractmethod
    def _evaluate(self, targets):
        """The summed loss at `targets`."""

    @abc.abstractmethod
    def multiply_hessian(self, vector):
        """`H v`, `H` the Hessian of the loss w.r.t. `inputs` (v like `inputs`)."""

    @abc.abstractmethod
    def multiply_hessian_factor(self, vector):
        """`B_H v` for an inner-shaped `v` (`B_H B_Hᵀ = H`); result like `inputs`."""

    @abc.abstractmethod
    def multiply_hessian_factor_transpose(self, vector):
        """`B_Hᵀ v` for `v` like `inputs`; result inner-shaped."""

    @abc.abstractmethod
    def multiply_hessian_factor_replicated_one_hot(self, index):
        """`B_H e`, `e` one at `index` (non-batch inner axes) in every batch row."""

    @property
    @abc.abstractmethod
    def hessian_factor_inner_shape(self):
        """Dynamic inner shape (1-D int tensor) of the Hessian factor."""

    @property
    @abc.abstractmethod
    def hessian_factor_inner_static_shape(self):
        """Static inner shape (`TensorShape`) of the Hessian factor."""


class NegativeLogProbLoss(LossFunction):
    """Abstract `−Σ_b log p(y_b | params_b)` with Fisher products.

    Args:
      seed: default op-level seed for `evaluate_on_sample`.
    """

    def __init__(self, seed=None):
        self._default_seed = seed
        super().__init__()

    @property
    def inputs(self):
        return self.params

    @property
    @abc.abstractmethod
    def params(self):
        """The parameters of the predictive distribution (Tensor or tuple)."""

    @abc.abstractmethod
    def multiply_fisher(self, vector):
        """`F v` for `v` like `inputs`."""

    @abc.abstractmethod
    def multiply_fisher_factor(self, vector):
        """`B v` for an inner-shaped `v` (`B Bᵀ = F`); result like `inputs`."""

    @abc.abstractmethod
    def multiply_fisher_factor_transpose(self, vector):
        """`Bᵀ v` for `v` like `inputs`; result inner-shaped."""

    @abc.abstractmethod
    def multiply_fisher_factor_replicated_one_hot(self, index):
        """`B e`, `e` one at `index` (non-batch inner axes) in every batch row."""

    @property
    @abc.abstractmethod
    def fisher_factor_inner_shape(self):
        """Dynamic inner shape (1-D int tensor) of the Fisher factor."""

    @property
    @abc.abstractmethod
    def fisher_factor_inner_static_shape(self):
        """Static inner shape (`TensorShape`) of the Fisher factor."""

    @abc.abstractmethod
    def sample(self, seed=None):
        """Targets drawn from the predictive distribution."""

    def evaluate_on_sample(self, seed=None) -> tf.Tensor:
        """The loss at targets sampled from the model (gradients skip the sample).

        Per case, its gradient `g` w.r.t. `inputs` satisfies `E[g gᵀ] = F`, which
        K-FAC's "gradients" estimation mode relies on. Non-finite parameters give
        finite, in-range samples (see `_distributions`) and a non-finite loss;
        detecting that is left to the caller (the optimizer skips such steps).

        Args:
          seed: op-level seed; None uses the constructor's seed.
        """
        if seed is None:
            seed = self._default_seed
        return self._evaluate(tf.stop_gradient(self.sample(seed)))


class NaturalParamsNegativeLogProbLoss(NegativeLogProbLoss):
    """Loss whose `params` are natural parameters of an exponential family.

    Then `H = F` (Martens 2014, §9.2), so every Hessian product delegates to the
    matching Fisher product.
    """

    def multiply_hessian(self, vector):
        return self.multiply_fisher(vector)

    def multiply_hessian_factor(self, vector):
        return self.multiply_fisher_factor(vector)

    def multiply_hessian_factor_transpose(self, vector):
        return self.multiply_fisher_factor_transpose(vector)

    def multiply_hessian_factor_replicated_one_hot(self, index):
        return self.multiply_fisher_factor_replicated_one_hot(index)

    @property
    def hessian_factor_inner_shape(self):
        return self.fisher_factor_inner_shape

    @property
    def hessian_factor_inner_static_shape(self):
        """The static inner shape (the original returned the dynamic one, §12)."""
        return self.fisher_factor_inner_static_shape


class DistributionNegativeLogProbLoss(NegativeLogProbLoss):
    """Negative log-probability under a distribution object (`dist`).

    Args:
      seed: default op-level seed for `evaluate_on_sample`.
    """

    def __init__(self, seed=None):
        super().__init__(seed=seed)

    @property
    @abc.abstractmethod
    def dist(self):
        """An object with `log_prob(x)` and `sample(seed=None)` (see _distributions)."""

    def _evaluate(self, targets):
        return -tf.reduce_sum(self.dist.log_prob(targets))

    def sample(self, seed=None):
        return self.dist.sample(seed=seed)


# ---------------------------------------------------------------------------
# Concrete losses.


class NormalMeanNegativeLogProbLoss(
    DistributionNegativeLogProbLoss, NaturalParamsNegativeLogProbLoss
):
    """Gaussian NLL with a predicted mean and a fixed variance.

    `L = Σ [(y − mean)²/(2 var) + ½ log(2π var)]`; per case `F = I/var` and
    `B = Bᵀ = var^{-1/2} I`. `var=0.5` matches the loss `Σ (y − mean)²`.

    Args:
      mean: `[batch, d]` predicted means (the natural parameters, up to `var`).
      var: scalar variance (float or scalar tensor).
      targets: `[batch, d]` real targets, or None.
      seed: default sampling seed.
    """

    def __init__(self, mean, var=0.5, targets=None, seed=None):
        self._mean = _as_tensor(mean)
        self._var = var
        self._targets = targets
        super().__init__(seed=seed)

    @property
    def targets(self):
        return self._targets

    @property
    def params(self):
        return self._mean

    @property
    def _var_tensor(self) -> tf.Tensor:
        # A Python float goes straight to the mean's dtype (no float32 rounding).
        return tf.cast(_as_tensor(self._var, self._mean.dtype), self._mean.dtype)

    @property
    def dist(self):
        return _distributions.Normal(self._mean, tf.sqrt(self._var_tensor))

    def _vector(self, vector):
        return _as_tensor(vector, self._mean.dtype)

    def multiply_fisher(self, vector):
        """`v / var`."""
        return self._vector(vector) / self._var_tensor

    def multiply_fisher_factor(self, vector):
        """`v · var^{-1/2}`."""
        return self._vector(vector) * tf.math.rsqrt(self._var_tensor)

    def multiply_fisher_factor_transpose(self, vector):
        """`v · var^{-1/2}` (the factor is symmetric)."""
        return self.multiply_fisher_factor(vector)

    def multiply_fisher_factor_replicated_one_hot(self, index):
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


class NormalMeanVarianceNegativeLogProbLoss(DistributionNegativeLogProbLoss):
    """Gaussian NLL with predicted mean and variance (not natural parameters).

    Per case, on `[mean; variance]` (`σ² = variance`):
    `F = diag(1/σ², 1/(2σ⁴))`, `B = diag(1/σ, 1/(√2 σ²))`. The factor's inner
    vectors are `[batch, 2d]`: the mean half then the variance half. The Hessian
    is not a Fisher here and is not implemented.

    Args:
      mean: `[batch, d]` predicted means.
      variance: `[batch, d]` predicted variances (positive).
      targets: `[batch, d]` real targets, or None.
      seed: default sampling seed.

    Raises:
      AssertionError (also a ValueError): if `mean` or `variance` is not 2-D.
    """

    def __init__(self, mean, variance, targets=None, seed=None):
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
        super().__init__(seed=seed)

    @property
    def targets(self):
        return self._targets

    @property
    def params(self) -> Tuple[tf.Tensor, tf.Tensor]:
        return self._mean, self._variance

    @property
    def dist(self):
        return _distributions.Normal(self._mean, tf.sqrt(self._variance))

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

    def multiply_fisher(self, vecs):
        """`(v_mean/σ², v_var/(2σ⁴))` for a tuple `(v_mean, v_var)`."""
        mean_vec, var_vec = self._vectors(vecs)
        return self._fisher_mean * mean_vec, self._fisher_var * var_vec

    def multiply_fisher_factor(self, vecs):
        """`(v₁/σ, v₂/(√2σ²))` for the halves of a `[..., 2d]` inner vector."""
        mean_vec, var_vec = tf.split(_as_tensor(vecs, self._mean.dtype), 2, axis=-1)
        return self._fisher_mean_factor * mean_vec, self._fisher_var_factor * var_vec

    def multiply_fisher_factor_transpose(self, vecs):
        """`concat([v_mean/σ, v_var/(√2σ²)], -1)` for a tuple `(v_mean, v_var)`."""
        mean_vec, var_vec = self._vectors(vecs)
        return tf.concat(
            [self._fisher_mean_factor * mean_vec, self._fisher_var_factor * var_vec],
            axis=-1,
        )

    def multiply_fisher_factor_replicated_one_hot(self, index):
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


class _LogitsLossMixin:
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
    def targets(self):
        return self._targets

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

    _distribution_class = _distributions.Categorical

    @property
    def _probs(self):
        return tf.nn.softmax(self._logits)

    @property
    def _sqrt_probs(self):
        # exp(½ log p) stays accurate for tiny probabilities.
        return tf.exp(0.5 * tf.nn.log_softmax(self._logits))

    def multiply_fisher(self, vector):
        """`v∘p − p·Σ(v∘p)` (row-wise)."""
        vector = self._vector(vector)
        probs = self._probs
        return vector * probs - probs * tf.reduce_sum(
            vector * probs, axis=-1, keepdims=True
        )

    def multiply_fisher_factor(self, vector):
        """`B v = q∘v − p·Σ(q∘v)` (row-wise)."""
        vector = self._vector(vector)
        probs = self._probs
        sqrt_probs = self._sqrt_probs
        return sqrt_probs * vector - probs * tf.reduce_sum(
            sqrt_probs * vector, axis=-1, keepdims=True
        )

    def multiply_fisher_factor_transpose(self, vector):
        """`Bᵀ v = q∘v − q·Σ(p∘v)` (row-wise)."""
        vector = self._vector(vector)
        probs = self._probs
        sqrt_probs = self._sqrt_probs
        return sqrt_probs * vector - sqrt_probs * tf.reduce_sum(
            probs * vector, axis=-1, keepdims=True
        )

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
        return _distributions.OneHotCategorical(
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

    _distribution_class = _distributions.Bernoulli

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
