"""`FisherFactor`: a covariance-like statistic and its moving-average update.

A factor owns one non-trainable variable `cov` and an op folding a fresh
mini-batch estimate into it by exponential moving average (Martens & Grosse
2015, §5: statistics are averaged over mini-batches). The two families built on
it are `InverseProvidingFactor` (inverse_providing.py: dense, keeps damped
matrix powers in variables) and `DiagonalFactor` (diagonal.py).

Non-finite values never enter the factor variables: a covariance estimate with
a NaN/Inf is not folded into the moving average (`non_finite_policy`), and an
inverse/matrix power that comes out non-finite is not written. Each skipped
write is counted in the factor's int64 variable `num_skipped_updates`.
"""

import abc
from typing import Callable

import tensorflow.compat.v1 as tf

from kfac.ops import _config
from kfac.ops._factors import moving_average
from kfac.ops._factors import statistics
from kfac.ops._utils import graph
from kfac.ops._utils import non_finite


class FisherFactor(abc.ABC):
    """A covariance-like statistic with a moving-average update op.

    Subclasses supply exactly the abstract members below; the original tests
    subclass with only these (some as plain methods), so none may be added.
    `_cov` holds the covariance variable (None until instantiated); tests may
    assign a Tensor to it, and every read goes through `self._cov`.
    """

    def __init__(self):
        self._cov = None
        self._num_skipped_updates = None
        self._kfac_config = _config.current()

    @property
    def config(self) -> _config.KfacConfig:
        """The settings this factor builds its ops with.

        Those of the `LayerCollection` that made it (see `FactorCache`), else
        the defaults when it was made (or first asked, for a subclass that
        skips `__init__`).
        """
        config = self.__dict__.get("_kfac_config")
        if config is None:
            config = self._kfac_config = _config.current()
        return config

    @property
    @abc.abstractmethod
    def _var_scope(self):
        """Unique variable-scope string of this factor."""

    @property
    def name(self) -> str:
        return self._var_scope

    @property
    @abc.abstractmethod
    def _cov_shape(self):
        """Shape of the cov variable."""

    @property
    def cov_shape(self):
        """Shape of the cov variable (known before the variable exists)."""
        return self._cov_shape

    @property
    @abc.abstractmethod
    def _num_sources(self):
        """Number of independent gradient sources summed in each estimate."""

    @property
    @abc.abstractmethod
    def _num_towers(self):
        """Number of towers averaged in each estimate."""

    @property
    @abc.abstractmethod
    def _dtype(self):
        """dtype of the cov variable."""

    @property
    def _cov_initializer(self):
        return statistics.covariance_initializer

    def instantiate_cov_variables(self) -> None:
        """Creates the non-trainable variables `<scope>/<_var_scope>/cov` and
        `.../num_skipped_updates` (int64 counter of skipped non-finite writes)."""
        if self._cov is not None:
            raise AssertionError(
                "instantiate_cov_variables: %s already has a cov variable." % self.name
            )
        # The initializers read `init_covariances_at_zero` of this factor.
        with tf.variable_scope(self._var_scope), _config.building_with(self.config):
            self._cov = tf.get_variable(
                "cov",
                initializer=self._cov_initializer,
                shape=self._cov_shape,
                trainable=False,
                dtype=self._dtype,
            )
        self._skipped_updates_counter()
        if self.config.zero_debias:
            self._debias_variables_for(self._cov)

    def _debias_variables_for(self, variable):
        """`(biased, local_step)` of `variable`'s debiased average, made once.

        Made with the variable (`instantiate_cov_variables`), so that an
        initializer run after instantiation covers them, and shared by every
        update op built later (thunks may be called many times).
        """
        state = self.__dict__.setdefault("_zero_debias_state", {})
        if variable.name not in state:
            state[variable.name] = moving_average.zero_debias_variables(variable)
        return state[variable.name]

    @property
    def num_skipped_updates(self):
        """int64 variable: covariance updates and inverse writes skipped because
        their new value was not finite (None before the variables exist)."""
        return getattr(self, "_num_skipped_updates", None)

    def _skipped_updates_counter(self):
        """The `num_skipped_updates` variable, created next to `cov`.

        Created outside any control flow (`init_scope`), in the current variable
        scope (the one `cov` was created in), so update ops may be built inside
        `tf.cond` (e.g. `utils.batch_execute`).
        """
        counter = getattr(self, "_num_skipped_updates", None)
        if counter is None:
            with tf.init_scope(), tf.variable_scope(self._var_scope):
                counter = tf.get_variable(
                    "num_skipped_updates",
                    shape=(),
                    dtype=tf.int64,
                    initializer=tf.zeros_initializer(),
                    trainable=False,
                )
            self._num_skipped_updates = counter
        return counter

    def _count_skipped_updates(self, num_skipped=1) -> tf.Operation:
        """Adds `num_skipped` (an int or a bool/int Tensor) to the counter.

        A factor whose cov variable was never instantiated (tests assign
        `_cov` directly) has no counter: the skip is not counted, and no
        variable is created behind an initializer the caller already ran.
        """
        counter = getattr(self, "_num_skipped_updates", None)
        if counter is None:
            return tf.no_op()
        increment = tf.cast(num_skipped, tf.int64)
        return counter.assign_add(increment, use_locking=True, read_value=False)

    def _moving_average_if_finite(
        self, variable, value, ema_decay, non_finite_policy
    ) -> tf.Tensor:
        """`assign_moving_average(variable, value, ema_decay)` unless `value` has a
        NaN/Inf: then, under "skip", `variable` keeps its value and the skip is
        counted; under "raise" the op fails naming this factor (see
        `non_finite.update_if_finite`). Evaluates to the value of `variable` after."""

        def update():
            debias = self.config.zero_debias
            debias_variables = self._debias_variables_for(variable) if debias else None
            return moving_average.assign_moving_average(
                variable,
                value,
                ema_decay,
                zero_debias=debias,
                debias_variables=debias_variables,
            )

        def skip():
            with tf.control_dependencies([self._count_skipped_updates()]):
                return tf.identity(variable.read_value())

        new_value = non_finite.update_if_finite(
            [(self.name, value)],
            update,
            skip,
            non_finite_policy,
            "the covariance estimate of factor",
        )
        # Control flow may forget the static shape; both branches have it.
        new_value.set_shape(variable.shape)
        return new_value

    @abc.abstractmethod
    def _compute_new_cov(self, source, tower):
        """The mini-batch estimate for one source and one tower."""

    def _sum_sources_mean_towers(self, compute_fn: Callable) -> tf.Tensor:
        """`(Σ_s Σ_t compute_fn(s, t)) / num_towers`.

        Under `TOWER_STRATEGY == "separate"` each term is built on its tower's
        data device. On TPU the result is averaged across replicas, so every
        replica folds the same statistic into its variable.
        """
        tower_strategy = self.config.checked_tower_strategy()
        contributions = []
        for source in range(self._num_sources):
            for tower in range(self._num_towers):
                device = (
                    self._get_data_device(tower)
                    if tower_strategy == "separate"
                    else None
                )
                with statistics.place_on_device(device):
                    contributions.append(compute_fn(source, tower))
        new_value = tf.add_n(contributions)
        if self._num_towers != 1:  # (a division by 1 is a pass over the matrix)
            new_value = new_value / float(self._num_towers)
        if graph.on_tpu():
            new_value = graph.cross_replica_mean(new_value)
        return new_value

    def make_covariance_update_op(self, ema_decay, non_finite_policy="skip"):
        """`cov ← ema_decay·cov + (1 − ema_decay)·Ĉ`, `Ĉ` summed over sources,
        averaged over towers; evaluates to the updated cov.

        Args:
          ema_decay: decay in [0, 1].
          non_finite_policy: what to do when `Ĉ` has a NaN/Inf: "skip" (keep
            `cov`, count it in `num_skipped_updates`), "raise" (the op fails with
            an InvalidArgumentError naming the factor) or None (no check).
        """
        new_cov = self._sum_sources_mean_towers(self._compute_new_cov)
        return self._moving_average_if_finite(
            self._cov, new_cov, ema_decay, non_finite_policy
        )

    @abc.abstractmethod
    def _get_data_device(self, tower):
        """Device of the data of `tower` (None or "" for no placement)."""

    @abc.abstractmethod
    def instantiate_inv_variables(self):
        """Creates the variables holding inverses / matrix powers."""

    @abc.abstractmethod
    def make_inverse_update_ops(self):
        """List of ops refreshing the inverse variables."""

    def get_cov_var(self):
        """The cov variable (None before `instantiate_cov_variables`)."""
        return self._cov

    @abc.abstractmethod
    def get_cov(self):
        """The (undamped) covariance as a dense matrix."""

    @abc.abstractmethod
    def left_multiply_matpower(self, x, exp, damping_func):
        """`(C + d·I)^exp · x`."""

    @abc.abstractmethod
    def right_multiply_matpower(self, x, exp, damping_func):
        """`x · (C + d·I)^exp`."""
