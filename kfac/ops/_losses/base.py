"""The abstract losses: `LossFunction` (Hessian products), `NegativeLogProbLoss`
(Fisher products, sampling), the two partial implementations every concrete
loss combines (natural parameters: `H = F`; a distribution object), and the
private mixins of the concrete losses (stored targets, per-case weights)."""

import abc

import tensorflow.compat.v1 as tf

from kfac.ops._losses.helpers import _case_weights
from kfac.ops._losses.helpers import _expand_cases


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
        return self._evaluate(self._data_targets())

    def _data_targets(self):
        """`stop_gradient(targets)`; ValueError if there are none."""
        if self.targets is None:
            raise ValueError(
                "Cannot evaluate {}: targets unspecified (pass targets= to the "
                "constructor or to the register_*_predictive_distribution "
                "call).".format(type(self).__name__)
            )
        return tf.stop_gradient(self.targets)

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

    The concrete losses also take per-case weights `v` (`weights`), making the
    loss `−Σ_b v_b log p(y_b | params_b)`; see `loss_functions`.

    Args:
      seed: default op-level seed for `evaluate_on_sample`.
    """

    _weights = None  # set by the concrete losses that were given weights

    def __init__(self, seed=None):
        self._default_seed = seed
        super().__init__()

    @property
    def weights(self):
        """The per-case weights `v` (Tensor of the inputs' dtype), or None."""
        return self._weights

    @property
    def _sqrt_weights(self):
        return None if self._weights is None else tf.sqrt(self._weights)

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

        `−Σ_b √v_b log p(ỹ_b | z_b)` with `ỹ_b ~ p(·|z_b)` (`v_b = 1` when
        unweighted). Per case, its gradient `g_b = −√v_b ∇ log p(ỹ_b|z_b)`
        satisfies `E[g_b g_bᵀ] = v_b F_b`, the Fisher of the weighted loss,
        which K-FAC's "gradients" estimation mode relies on: the weight enters
        squared through `g gᵀ`, hence `√v` here and `v` in `evaluate()`.
        Non-finite parameters give finite, in-range samples (see
        `distributions`) and a non-finite loss; detecting that is left to the
        caller (the optimizer skips such steps).

        Args:
          seed: op-level seed; None uses the constructor's seed.
        """
        if seed is None:
            seed = self._default_seed
        sample = tf.stop_gradient(self.sample(seed))
        if self._weights is None:
            return self._evaluate(sample)
        return self._evaluate_scaled(sample, self._sqrt_weights)

    def evaluate_for_empirical_fisher(self) -> tf.Tensor:
        """`−Σ_b √v_b log p(y_b | z_b)` at the data targets: "empirical" mode.

        As for `evaluate_on_sample`, `√v` makes the outer product of each
        case's gradient `v_b ∇ℓ_b ∇ℓ_bᵀ`, the empirical Fisher of the weighted
        loss. Unweighted, this is `evaluate()`.

        Raises:
          ValueError: if the loss was built without targets.
        """
        if self._weights is None:
            return self.evaluate()
        return self._evaluate_scaled(self._data_targets(), self._sqrt_weights)

    def _evaluate_scaled(self, targets, case_scale):
        """`−Σ_b c_b log p(targets_b | params_b)` for per-case scales `c`.

        Needed only by losses that take weights (`_CaseWeightsMixin`).
        """
        raise NotImplementedError(
            "{} does not support per-case weights.".format(type(self).__name__)
        )


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


class _StoredTargetsMixin(object):
    """`targets`: the value given to the constructor (`_targets`), or None.

    First base of the concrete losses, which store their targets as given.
    """

    _targets = None

    @property
    def targets(self):
        return self._targets


class _CaseWeightsMixin(object):
    """Per-case weights `v` of a concrete loss (a base before the public ones).

    The loss implements the products of the unweighted per-case Fisher `F_b`
    and factor `B_b` (`_multiply_fisher_unweighted`,
    `_multiply_fisher_factor_unweighted`,
    `_multiply_fisher_factor_transpose_unweighted`,
    `_multiply_fisher_factor_replicated_one_hot_unweighted`); the public
    products scale case `b` of the result by `v_b` (Fisher) or by `√v_b` (the
    factor `diag(√v) B`, its transpose and its columns), so that the factor
    of the weighted Fisher `v·F` still satisfies `B Bᵀ = v·F`. Without
    weights they return the unweighted products themselves (no extra ops).
    """

    def _set_weights(self, weights, data: tf.Tensor) -> None:
        """Stores `weights` for the cases of `data` (its leading axes)."""
        self._weights = _case_weights(weights, data)
        if self._weights is not None:
            self._data_rank = data.shape.rank

    def _scaled_cases(self, value, case_scale):
        """`value` (a Tensor shaped like the inputs, or a tuple of them) with
        case `b` multiplied by `case_scale_b`; unchanged when it is None."""
        if case_scale is None:
            return value
        if isinstance(value, tuple):
            return tuple(self._scaled_cases(part, case_scale) for part in value)
        return value * _expand_cases(case_scale, self._data_rank)

    def multiply_fisher(self, vector):
        """`v_b F_b u_b` for every case `b` of `u` (shaped like `inputs`)."""
        return self._scaled_cases(
            self._multiply_fisher_unweighted(vector), self.weights
        )

    def multiply_fisher_factor(self, vector):
        """`√v_b B_b u_b` for an inner-shaped `u`; result like `inputs`."""
        return self._scaled_cases(
            self._multiply_fisher_factor_unweighted(vector), self._sqrt_weights
        )

    def multiply_fisher_factor_transpose(self, vector):
        """`√v_b B_bᵀ u_b` for `u` like `inputs`; result inner-shaped."""
        return self._scaled_cases(
            self._multiply_fisher_factor_transpose_unweighted(vector),
            self._sqrt_weights,
        )

    def multiply_fisher_factor_replicated_one_hot(self, index):
        """`√v_b B_b e` in every case `b`, `e` one at `index` (non-batch axes)."""
        return self._scaled_cases(
            self._multiply_fisher_factor_replicated_one_hot_unweighted(index),
            self._sqrt_weights,
        )


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
        """An object with `log_prob(x)` and `sample(seed=None)` (see distributions)."""

    def _evaluate(self, targets):
        return self._evaluate_scaled(targets, self.weights)

    def _evaluate_scaled(self, targets, case_scale):
        log_probs = self.dist.log_prob(targets)
        if case_scale is not None:
            # Categorical log-probs have the cases' shape; the others one more
            # (event) axis: the scale is aligned on the leading axes.
            log_probs = log_probs * _expand_cases(case_scale, log_probs.shape.rank)
        return -tf.reduce_sum(log_probs)

    def sample(self, seed=None):
        return self.dist.sample(seed=seed)
