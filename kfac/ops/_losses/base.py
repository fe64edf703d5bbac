"""The abstract losses: `LossFunction` (Hessian products), `NegativeLogProbLoss`
(Fisher products, sampling), and the two partial implementations every concrete
loss combines (natural parameters: `H = F`; a distribution object)."""

import abc

import tensorflow.compat.v1 as tf


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
        finite, in-range samples (see `distributions`) and a non-finite loss;
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


class _StoredTargetsMixin(object):
    """`targets`: the value given to the constructor (`_targets`), or None.

    First base of the concrete losses, which store their targets as given.
    """

    _targets = None

    @property
    def targets(self):
        return self._targets


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
        return -tf.reduce_sum(self.dist.log_prob(targets))

    def sample(self, seed=None):
        return self.dist.sample(seed=seed)
