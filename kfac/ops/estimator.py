"""Builds the Fisher estimate's factors, variables and update ops (API.md §7).

`FisherEstimator` turns a complete `LayerCollection` into:
* per-block gradient signals ("sources") for the chosen estimation mode,
  from which every block instantiates its factors;
* thunks creating the factors' variables and their update ops;
* block-wise products `F̂^exp v` (`multiply_matpower`, `multiply_inverse`).
Placement of variables/ops is supplied by a mixin (`placement`).
"""

import abc

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops import placement
from kfac.ops import utils

ESTIMATION_MODES = ("gradients", "empirical", "curvature_prop", "exact")


class VariablesAlreadyMadeError(ValueError, RuntimeError):
    """A second make/create call on one estimator ("Already made variables.")."""


def make_fisher_estimator(placement_strategy=None, **kwargs) -> "FisherEstimator":
    """Builds an estimator for `placement_strategy` (None or "round_robin").

    Raises:
      ValueError: for any other placement strategy.
    """
    if placement_strategy in (None, "round_robin"):
        return FisherEstimatorRoundRobin(**kwargs)
    raise ValueError(
        "Unimplemented vars and ops placement strategy: {!r}; expected None or "
        "'round_robin'.".format(placement_strategy)
    )


def _name(value) -> str:
    return getattr(value, "name", None) or repr(value)


def _densify_missing(grads, tensors):
    """`tf.gradients` returns None for tensors a loss does not reach; use zeros.

    (E.g. in "exact" mode, tower 0's loss does not reach tower 1's outputs.)
    """
    return [
        tf.zeros_like(tensor) if grad is None else grad
        for grad, tensor in zip(grads, tensors)
    ]


class FisherEstimator(abc.ABC):
    """Estimates the Fisher of a model's registered layers block by block.

    Args:
      variables: the variables whose Fisher is estimated; must be exactly the
        registered ones (checked when ops are made).
      cov_ema_decay: decay of the factors' exponential moving averages.
      damping: float, scalar Tensor or Variable added (approximately) to every
        block; the default of the op-making methods, which may be given another.
      layer_collection: the `LayerCollection` describing the model.
      exps: matrix powers registered on every block (power 1 is always available).
      estimation_mode: "gradients" (sampled targets; the true Fisher),
        "empirical" (data targets), "curvature_prop" (random-sign
        propagation) or "exact" (one source per output coordinate). Validated
        when ops are first made. Every mode estimates the Fisher of the
        weighted loss when losses have per-case weights (`loss_functions`).
      colocate_gradients_with_ops: forwarded to `tf.gradients`.
      name: default variable scope of the variables and ops.
      non_finite_policy: (port addition) what a covariance update does when the
        new estimate has a NaN/Inf: "skip" (default; the factor keeps its value
        and counts the skip in its `num_skipped_updates` variable), "raise"
        (the op fails with an InvalidArgumentError naming the factor) or None
        (no check). Inverse updates never write non-finite values.
    """

    def __init__(
        self,
        variables,
        cov_ema_decay,
        damping,
        layer_collection,
        exps=(-1,),
        estimation_mode="gradients",
        colocate_gradients_with_ops=True,
        name="FisherEstimator",
        non_finite_policy="skip",
    ):
        utils.check_non_finite_policy(non_finite_policy)
        self._non_finite_policy = non_finite_policy
        self._variables = variables
        self._cov_ema_decay = cov_ema_decay
        self._damping = damping
        self._layers = layer_collection
        self._exps = exps
        self._estimation_mode = estimation_mode
        self._colocate_gradients_with_ops = colocate_gradients_with_ops
        self._name = name
        self._made_vars = False
        self._gradient_fns = {
            "gradients": self._get_grads_lists_gradients,
            "empirical": self._get_grads_lists_empirical,
            "curvature_prop": self._get_grads_lists_curvature_prop,
            "exact": self._get_grads_lists_exact,
        }

    @property
    def variables(self):
        return self._variables

    @property
    def damping(self):
        """The damping the blocks received when the ops were made (until then,
        the constructor's)."""
        return self._damping

    @property
    def blocks(self):
        """All registered FisherBlocks, in registration order."""
        return self._layers.get_blocks()

    @property
    def factors(self):
        """All FisherFactors, in creation order."""
        return self._layers.get_factors()

    @property
    def name(self) -> str:
        return self._name

    def made_vars(self) -> bool:
        return self._made_vars

    @property
    def non_finite_policy(self):
        """"skip", "raise" or None (see the constructor)."""
        return self._non_finite_policy

    def num_skipped_factor_updates(self) -> tf.Tensor:
        """int64 scalar: total of the factors' `num_skipped_updates` counters.

        Non-finite covariance estimates not folded into the moving averages and
        non-finite inverses not written, since the variables were created (0
        when no factor has its variables yet).
        """
        counters = [
            factor.num_skipped_updates
            for factor in self.factors
            if getattr(factor, "num_skipped_updates", None) is not None
        ]
        if not counters:
            return tf.constant(0, dtype=tf.int64)
        return tf.add_n([tf.convert_to_tensor(counter) for counter in counters])

    @abc.abstractmethod
    def make_ops_and_vars(self, scope=None, damping=None):
        """See `placement.RoundRobinPlacementMixin.make_ops_and_vars`."""

    @abc.abstractmethod
    def make_vars_and_create_op_thunks(self, scope=None, damping=None):
        """See `placement.RoundRobinPlacementMixin.make_vars_and_create_op_thunks`."""

    # --------------------------------------------------------------------
    # Products with the (damped) block-diagonal estimate.

    def multiply_matpower(self, exp, vecs_and_vars) -> list:
        """`[(F̂_block^exp · vec, var)]`, block by block, in the input order.

        Each block receives the vectors of its variables (a list for a tuple
        key); `IndexedSlices` are passed through unchanged.

        Args:
          exp: a power in `exps`, or 1.
          vecs_and_vars: list of `(vector, variable)` pairs covering exactly the
            registered variables.

        Raises:
          ValueError: if `exp` was not registered.
          KeyError: if a registered variable has no vector, or a pair's variable
            is not registered.
        """
        if exp != 1 and exp not in self._exps:
            raise ValueError(
                "Power {!r} was not registered; this estimator has exps={!r} "
                "(and 1).".format(exp, tuple(self._exps))
            )
        vecs_and_vars = list(vecs_and_vars)
        given = set(var for _, var in vecs_and_vars)
        registered = set(self._layers.registered_variables)
        missing = [var for var in self._layers.registered_variables if var not in given]
        unknown = [var for _, var in vecs_and_vars if var not in registered]
        if missing or unknown:
            raise KeyError(
                "vecs_and_vars must cover exactly the registered variables; missing: "
                "{}; not registered: {}.".format(
                    [_name(var) for var in missing], [_name(var) for var in unknown]
                )
            )
        vecs = utils.SequenceDict((var, vec) for vec, var in vecs_and_vars)
        results = utils.SequenceDict()
        for params, block in self._layers.fisher_blocks.items():
            results[params] = block.multiply_matpower(vecs[params], exp)
        return [(results[var], var) for _, var in vecs_and_vars]

    def multiply_inverse(self, vecs_and_vars) -> list:
        """`multiply_matpower(-1, vecs_and_vars)`: the preconditioned vectors."""
        return self.multiply_matpower(-1, vecs_and_vars)

    def multiply(self, vecs_and_vars) -> list:
        """`multiply_matpower(1, vecs_and_vars)`: products with the damped blocks."""
        return self.multiply_matpower(1, vecs_and_vars)

    # --------------------------------------------------------------------
    # Variables and ops.

    def create_ops_and_vars_thunks(self, scope=None, damping=None):
        """Finalizes the registration and returns the four lists of factor thunks.

        Args:
          scope: variable scope of the variables and ops (default: `name`).
          damping: the damping `λ` (float, scalar Tensor or Variable) every block
            adds to its Fisher, read by its inverse updates; None means the
            constructor's. `damping` reports it from then on.

        Returns:
          `(cov_variable_thunks, cov_update_thunks, inv_variable_thunks,
          inv_update_thunks)`, one entry per factor. Each thunk runs in
          `tf.variable_scope(scope or name)`. A factor's cov-variable thunk must
          run before its update thunks; its inv-variable thunk before its
          inv-update thunk. Update thunks may be called repeatedly.

        Raises:
          VariablesAlreadyMadeError: ("Already made variables.") on a second call
            or after another make method.
          ValueError: unknown estimation mode, no losses, or a registration that
            does not match `variables`.
        """
        if self._made_vars:
            raise VariablesAlreadyMadeError("Already made variables.")
        self._made_vars = True
        if damping is not None:
            self._damping = damping
        self._finalize_layer_collection()
        scope = self.name if scope is None else scope
        decay = self._cov_ema_decay
        policy = self._non_finite_policy

        def in_scope(func):
            def thunk():
                with tf.variable_scope(scope):
                    return func()

            return thunk

        factors = list(self.factors)
        return (
            [in_scope(factor.instantiate_cov_variables) for factor in factors],
            [
                in_scope(
                    lambda f=factor: f.make_covariance_update_op(
                        decay, non_finite_policy=policy
                    )
                )
                for factor in factors
            ],
            [in_scope(factor.instantiate_inv_variables) for factor in factors],
            [
                in_scope(lambda f=factor: tf.group(f.make_inverse_update_ops()))
                for factor in factors
            ],
        )

    def _finalize_layer_collection(self):
        if self._estimation_mode not in self._gradient_fns:
            raise ValueError(
                "Unrecognized value {!r} for estimation_mode; expected one of "
                "{}.".format(self._estimation_mode, list(ESTIMATION_MODES))
            )
        self._layers.create_subgraph()
        self._layers.check_registration(self.variables)
        blocks = list(self.blocks)
        tensors = [block.tensors_to_compute_grads() for block in blocks]
        grads_lists = self._gradient_fns[self._estimation_mode](tensors)
        for grads_list, block in zip(grads_lists, blocks):
            block.instantiate_factors(grads_list, self.damping)
        for block in blocks:
            for exp in self._exps:
                block.register_matpower(exp)

    # --------------------------------------------------------------------
    # Gradient signals. Each returns, per block, a tuple over sources with the
    # nesting of that block's `tensors_to_compute_grads()`.

    def _gradients(self, ys, tensors, grad_ys=None):
        flat_tensors = tf.nest.flatten(tensors)
        grads = tf.gradients(
            ys,
            flat_tensors,
            grad_ys=grad_ys,
            colocate_gradients_with_ops=self._colocate_gradients_with_ops,
        )
        return tf.nest.pack_sequence_as(tensors, _densify_missing(grads, flat_tensors))

    def _get_grads_lists_gradients(self, tensors):
        # A list of losses, not their sum: the sum would add ops on the default
        # device instead of next to each loss.
        grads = self._gradients(self._layers.eval_losses_on_samples(), tensors)
        return [(grad,) for grad in grads]

    def _get_grads_lists_empirical(self, tensors):
        # √v-weighted at the data targets, so each case's outer product is
        # weighted by v (the same as eval_losses() for unweighted losses).
        losses = self._layers.eval_losses_for_empirical_fisher()
        grads = self._gradients(losses, tensors)
        return [(grad,) for grad in grads]

    def _get_transformed_random_signs(self):
        """Per loss, `B s` for a random ±1 vector `s` (so that E[B s sᵀ Bᵀ] = F)."""
        products = []
        for loss in self._layers.losses:
            with self._layers.loss_colocation(loss):
                dtype = tf.as_dtype(tf.nest.flatten(loss.inputs)[0].dtype).base_dtype
                signs = utils.generate_random_signs(
                    loss.fisher_factor_inner_shape, dtype=dtype
                )
                products.append(loss.multiply_fisher_factor(signs))
        return products

    def _get_grads_lists_curvature_prop(self, tensors):
        losses = self._layers.losses
        grads = self._gradients(
            tf.nest.flatten([loss.inputs for loss in losses]),
            tensors,
            grad_ys=tf.nest.flatten(self._get_transformed_random_signs()),
        )
        return [(grad,) for grad in grads]

    def _get_grads_lists_exact(self, tensors):
        """One source per loss and per coordinate of its factor's inner shape.

        Backpropagating column `B e_i` of every case's factor and summing the
        outer products over `i` gives `J^T B B^T J = J^T F J` exactly.
        """
        sources = []
        for loss in self._layers.losses:
            with self._layers.loss_colocation(loss):
                inner_shape = loss.fisher_factor_inner_static_shape[1:]
                if not inner_shape.is_fully_defined():
                    raise ValueError(
                        "estimation_mode='exact' needs the static inner shape of "
                        "every loss's Fisher factor; got {} for {}.".format(
                            inner_shape, type(loss).__name__
                        )
                    )
                for index in np.ndindex(*inner_shape.as_list()):
                    one_hot_column = loss.multiply_fisher_factor_replicated_one_hot(
                        index
                    )
                    sources.append(
                        self._gradients(
                            tf.nest.flatten(loss.inputs),
                            tensors,
                            grad_ys=tf.nest.flatten(one_hot_column),
                        )
                    )
        return list(zip(*sources))


class FisherEstimatorRoundRobin(placement.RoundRobinPlacementMixin, FisherEstimator):
    """`FisherEstimator` with round-robin placement of factors over devices.

    `FisherEstimatorRoundRobin(cov_devices=None, inv_devices=None, **kwargs)`;
    the other arguments go to `FisherEstimator` (pass them by keyword).
    """
