"""The K-FAC optimizer (Martens & Grosse 2015): `KfacOptimizer` (API.md §8).

A `GradientDescentOptimizer` whose step is the K-FAC preconditioned gradient
`F̂⁻¹ g` (from a `FisherEstimator` built on a `LayerCollection`), combined with
momentum ("regular", "adam") or the 2-D quadratic model ("qmodel"), optionally
KL-clipped (`norm_constraint`) and with optional Levenberg-Marquardt damping
adaptation. `KfacOptimizer` wires the parts of `kfac.ops._optimizer`, each
owning its variables and its update: the velocities (`momentum`), the norm
constraint, the quadratic model, the damping adaptation, the non-finite guard
and the deprecated implicit op creation; `update_rule` combines them into a step.

Port addition: a step whose gradient or update has a NaN/Inf never reaches the
weights, the velocities or the damping state (`non_finite_policy`).
"""

from typing import Any
from typing import Callable
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops import estimator as est
from kfac.ops import utils
from kfac.ops._optimizer import arguments
from kfac.ops._optimizer import norm_constraint as clipping
from kfac.ops._optimizer import qmodel
from kfac.ops._optimizer.damping_adaptation import DampingAdaptation
from kfac.ops._optimizer.implicit_ops import ImplicitOps
from kfac.ops._optimizer.momentum import Velocities
from kfac.ops._optimizer.non_finite_guard import NonFiniteGuard
from kfac.ops._optimizer.step_statistics import StepStatistics
from kfac.ops._optimizer.update_rule import UpdateRule
from kfac.ops._optimizer.vectors import inner_product_list
from kfac.ops._summaries import summary_ops

# Module-private helpers named in API.md §8.
_inner_product_list = inner_product_list
_two_by_two_solve = qmodel.two_by_two_solve

VarsAndVectors = List[Tuple[Any, Any]]


def _implicit_result(name: str) -> property:
    """The deprecated convenience property `name` (`_optimizer.implicit_ops`)."""
    return property(lambda optimizer: optimizer._implicit_ops.get(name),
                    doc="Deprecated: `{}` of the implicit `make_ops_and_vars()` "
                    "(made on first access, with a DeprecationWarning).".format(name))


class KfacOptimizer(tf.train.GradientDescentOptimizer):
    """K-FAC: natural-gradient descent with a Kronecker-factored Fisher.

    One training step computes `p = F̂⁻¹ g` with the estimator's damped block-wise
    inverse, turns it into a step `s` according to `momentum_type` and applies
    `θ ← θ − learning_rate · s` through `GradientDescentOptimizer`. The Fisher
    factors and their inverses are refreshed by separate ops (`cov_update_op`,
    `inv_update_op`, or the explicit `make_*` methods) that the caller runs.

    Damping adaptation (`set_damping_adaptation_params`): unlike the original,
    where the estimator kept the construction-time damping and only the quadratic
    model saw the adapted value, here the optimizer hands its damping variable to
    the estimator when the ops are made. Every inverse update therefore
    recomputes `(F̂ + λ)⁻¹` with the current `λ`. For this the adaptation must be
    enabled before any op is made.
    """

    def __init__(self,
                 learning_rate: Any,
                 cov_ema_decay: Any,
                 damping: Any,
                 layer_collection: Any,
                 var_list: Optional[Sequence[Any]] = None,
                 momentum: Any = 0.9,
                 momentum_type: str = "regular",
                 norm_constraint: Any = None,
                 name: str = "KFAC",
                 estimation_mode: str = "gradients",
                 colocate_gradients_with_ops: bool = True,
                 batch_size: Any = None,
                 placement_strategy: Optional[str] = None,
                 non_finite_policy: Optional[str] = "skip",
                 lint: Any = "warn",
                 **kwargs: Any) -> None:
        """Builds the optimizer and its (op-less) Fisher estimator.

        Args:
          learning_rate: `η` > 0, a float, a Tensor or a callable (use 1.0 with
            "qmodel").
          cov_ema_decay: decay in [0, 1] of the factors' moving averages.
          damping: `λ` ≥ 0 (float or scalar Tensor) added to the Fisher blocks.
          layer_collection: the complete `LayerCollection` of the model.
          var_list: variables to optimise; default `tf.trainable_variables()` at
            construction time. They must match the registered layers.
          momentum: in [0, 1); must be 0 unless momentum_type is "regular"/"adam".
          momentum_type: "regular" (`v ← m·v + F̂⁻¹g`), "adam" (`v ← m·v + g`,
            step `F̂⁻¹v`) or "qmodel" (`v ← μ·v − α·F̂⁻¹g`); case-insensitive.
          norm_constraint: `C` > 0 for KL clipping (Ba et al. 2017, §5) of the
            "regular" step so that `η² pᵀF̂p ≤ C`; None disables it.
          name: optimizer name, also the variable scope of its variables.
          estimation_mode: "gradients", "empirical", "curvature_prop" or "exact".
          colocate_gradients_with_ops: forwarded to the estimator's gradients.
          batch_size: mini-batch size, required for "qmodel" and damping adaptation.
          placement_strategy: estimator placement (None or "round_robin").
          non_finite_policy: (port addition, keyword) what happens when a
            training step's gradient, preconditioned update or new velocity, or a
            factor's covariance estimate, has a NaN or Inf:
            "skip" (default): nothing non-finite is written. The training step
              leaves the weights, velocities and quadratic-model state unchanged
              and adds 1 to the int64 variable `skipped_steps`; `global_step`
              still advances (it counts the batches seen, so learning-rate
              schedules, `batch_execute` and damping adaptation stay in step with
              the data). The factor keeps its moving average and counts the skip
              in its `num_skipped_updates` (total: `skipped_factor_updates`).
            "raise": the op fails with an InvalidArgumentError naming the
              variables (or factor) with non-finite values; nothing is written.
            None: no checks (the original behaviour).
            Inverse updates never write non-finite values, whatever the policy.
          lint: (port addition, keyword) the registration linter
            (`LayerCollection.lint_registration`), run once per loss by
            `compute_gradients`/`minimize`: "warn" (default, also True) issues a
            `RegistrationWarning` per problem, "raise" a ValueError listing them,
            False/None/"off" skips it.
          **kwargs: forwarded to `estimator.make_fisher_estimator` (e.g.
            `cov_devices`, `inv_devices`).

        Raises:
          ValueError: for an unknown momentum_type, estimation_mode or
            non_finite_policy, norm_constraint or momentum with a momentum_type
            that does not use them, qmodel without batch_size, or a number out of
            range or not finite (the message names it).
        """
        momentum_type = arguments.check_momentum_type(momentum_type)
        arguments.check_optimizer_arguments(
            learning_rate, cov_ema_decay, damping, layer_collection, momentum,
            momentum_type, norm_constraint, batch_size)
        arguments.check_estimation_mode(estimation_mode, est.ESTIMATION_MODES)
        utils.check_non_finite_policy(non_finite_policy)
        self._lint = arguments.check_lint(lint)
        self._linted_losses = []
        variables = tf.trainable_variables() if var_list is None else list(var_list)
        # The arguments, as the original kept them (its tests read them).
        self._layers = layer_collection
        self._cov_ema_decay = cov_ema_decay
        self._momentum = momentum
        self._momentum_type = momentum_type
        self._norm_constraint = norm_constraint
        self._batch_size = batch_size

        with tf.variable_scope(name) as scope:
            # Re-entered to create variables later under "<name>/" whatever the
            # caller's scope then is (minimize adds one of its own).
            self._variable_scope = scope
            self._fisher_est = est.make_fisher_estimator(
                placement_strategy=placement_strategy, variables=variables,
                cov_ema_decay=cov_ema_decay, damping=damping,
                layer_collection=layer_collection, exps=(-1,),
                estimation_mode=estimation_mode,
                colocate_gradients_with_ops=colocate_gradients_with_ops,
                non_finite_policy=non_finite_policy, **kwargs)
        super(KfacOptimizer, self).__init__(learning_rate, name=name)

        self._guard = NonFiniteGuard(non_finite_policy, scope)
        self._adaptation = DampingAdaptation(damping)
        self._implicit_ops = ImplicitOps(self._fisher_est.made_vars,
                                         self.make_ops_and_vars)
        self._velocities = Velocities(
            lambda var: self._zeros_slot(var, "velocity", self._name), self._guard)
        self._clipping = None if norm_constraint is None else (
            clipping.NormConstraint(norm_constraint, self._learning_rate_as))
        self._quadratic_model = qmodel.QuadraticModel(
            layer_collection, batch_size, lambda: self.damping,
            colocate_gradients_with_ops)
        self._step_statistics = StepStatistics(
            scope, lambda: list(layer_collection.fisher_blocks.keys()))
        self._update_rule = UpdateRule(
            momentum_type, momentum, self._fisher_est,
            self._velocities, self._clipping, self._quadratic_model,
            self._adaptation, self._guard, self._step_statistics,
            self._learning_rate_as)

    def set_damping_adaptation_params(self,
                                      is_chief: bool,
                                      prev_train_batch: Any,
                                      loss_fn: Callable[[Any], Any],
                                      min_damping: float = 1e-05,
                                      damping_adaptation_decay: float = 0.99,
                                      damping_adaptation_interval: int = 5) -> None:
        """Enables Levenberg-Marquardt damping adaptation (Martens & Grosse, §6.5).

        Every `damping_adaptation_interval` steps (when
        `(global_step + 1) mod interval == 0`, before the training step),
        `ρ = (loss_fn(prev_train_batch) − prev_loss) / q_model_change` and
        `λ ← λ/ω` if `ρ < 0.25`, `λ ← λ·ω` if `ρ > 0.75`, then
        `λ ← max(λ, min_damping)`, with `ω = decay ** interval`. `q_model_change`
        is the quadratic model's predicted change for its optimal `(α, μ)`,
        stored by every chief step ("regular" and "qmodel" over
        (`F̂⁻¹g`, previous update); "adam", whose velocity is not the previous
        update, along its step direction alone, with `μ = 0`).

        Creates, in the variable scope of the optimizer's name, the float32 scalar
        variables "rho", "prev_loss", "q_model_change" (initialised to 0) and
        "damping" (initialised to the constructor's damping; `self.damping` then
        returns it), and (port addition, for summaries) "loss_changes", `[2]`:
        the predicted and actual change whose ratio was the last `ρ`. The make
        methods pass this variable to the estimator, so the inverse updates use
        the adapted damping (fix of the original, API.md §12).

        Args:
          is_chief: only the chief updates the damping and the model change.
          prev_train_batch: the previous training batch, passed to `loss_fn`.
          loss_fn: `prev_train_batch -> loss` with the current parameters.
          min_damping: lower bound of `λ`.
          damping_adaptation_decay: per-step decay; `ω = decay ** interval`.
          damping_adaptation_interval: steps between adaptations (positive int).

        Raises:
          ValueError: if adaptation is already enabled, if the optimizer's ops were
            already made, if batch_size was not given (chief), or bad arguments.
        """
        if self._adaptation.enabled:
            raise ValueError("Damping adaptation parameters already set.")
        if self._fisher_est.made_vars():
            raise ValueError(
                "set_damping_adaptation_params must be called before the optimizer's "
                "ops are made (minimize, apply_gradients, make_ops_and_vars, ...): the "
                "inverse updates read the adapted damping variable.")
        arguments.check_damping_adaptation_arguments(
            min_damping, damping_adaptation_decay, damping_adaptation_interval, loss_fn)
        if is_chief and self._batch_size is None:
            raise ValueError("batch_size is required for damping adaptation (the "
                             "quadratic model uses the mini-batch Fisher); got None.")
        with tf.variable_scope(self.get_name()):
            self._adaptation.enable(is_chief, prev_train_batch, loss_fn, min_damping,
                                    damping_adaptation_decay,
                                    damping_adaptation_interval)

    # --------------------------------------------------------------- properties

    @property
    def variables(self) -> List[Any]:
        """The variables whose Fisher is estimated and which are optimised."""
        return self._fisher_est.variables

    @property
    def damping(self) -> Any:
        """The damping variable when adaptation is enabled, else the constant."""
        return self._adaptation.damping

    @property
    def damping_adaptation_interval(self) -> int:
        return self._adaptation.rule.interval

    @property
    def non_finite_policy(self) -> Optional[str]:
        """"skip", "raise" or None (see the constructor)."""
        return self._guard.policy

    @property
    def skipped_steps(self) -> tf.Variable:
        """int64 variable `<name>/num_skipped_steps`: training steps skipped
        because their gradient or update had a NaN/Inf ("skip" policy).

        Created with the first training op (whatever the policy) or on first
        access; a checkpoint saves it with the other optimizer state.
        """
        return self._guard.skipped_steps

    @property
    def skipped_factor_updates(self) -> tf.Tensor:
        """int64 scalar: non-finite covariance estimates (and inverses) that the
        factors did not write, summed over factors (their
        `num_skipped_updates` variables)."""
        return self._fisher_est.num_skipped_factor_updates()

    @property
    def layer_collection(self) -> Any:
        """(Port addition) the `LayerCollection` given to the constructor."""
        return self._layers

    @property
    def step_statistics(self) -> StepStatistics:
        """(Port addition) what the last training step did, in variables
        (`_optimizer.step_statistics`): per-block gradient products, the
        quadratic model's coefficients, the KL clipping coefficient."""
        return self._step_statistics

    @property
    def learning_rate_tensor(self) -> tf.Tensor:
        """(Port addition) the learning rate as a float32 Tensor (a callable
        learning rate is called)."""
        return self._learning_rate_as(tf.float32)

    def make_summary_ops(self, collections: Any = None, per_layer: bool = True,
                         histograms: bool = False, **kwargs: Any) -> tf.Tensor:
        """(Port addition) TensorBoard summaries of the optimizer's state and of
        each layer's curvature; see `kfac.summaries.make_summary_ops`."""
        return summary_ops.make_summary_ops(self, collections=collections,
                                            per_layer=per_layer,
                                            histograms=histograms, **kwargs)

    @property
    def updates_curvature_in_train_op(self) -> bool:
        """(Port addition) whether the training op itself refreshes the factors
        and inverses (False: the caller runs `cov_update_op`/`inv_update_op`)."""
        return False

    # Seams of subclasses (PeriodicInvCovUpdateKfacOpt), port additions.

    @property
    def estimator(self) -> est.FisherEstimator:
        """The `FisherEstimator` of the optimizer's variables."""
        return self._fisher_est

    @property
    def damping_adaptation(self) -> DampingAdaptation:
        """The damping and its adaptation state (`set_damping_adaptation_params`)."""
        return self._adaptation

    @property
    def variable_scope(self) -> tf.VariableScope:
        """The scope "<name>" of the optimizer's variables, as at construction."""
        return self._variable_scope

    cov_update_thunks = _implicit_result("cov_update_thunks")
    cov_update_ops = _implicit_result("cov_update_ops")
    cov_update_op = _implicit_result("cov_update_op")
    inv_update_thunks = _implicit_result("inv_update_thunks")
    inv_update_ops = _implicit_result("inv_update_ops")
    inv_update_op = _implicit_result("inv_update_op")

    # ---------------------------------------------------- explicit op creation

    def make_ops_and_vars(self) -> Tuple[Any, ...]:
        """The estimator's `(cov_update_ops, cov_update_op, inv_update_ops,
        inv_update_op, cov_update_thunks, inv_update_thunks)`, variables under
        the scope "<name>/"."""
        return self._fisher_est.make_ops_and_vars(scope=self.get_name(),
                                                  damping=self.damping)

    def make_vars_and_create_op_thunks(self) -> Tuple[List[Any], List[Any]]:
        """`(cov_update_thunks, inv_update_thunks)`, scope "<name>/<estimator name>"."""
        return self._fisher_est.make_vars_and_create_op_thunks(
            scope=self._thunk_scope(), damping=self.damping)

    def create_ops_and_vars_thunks(self) -> Tuple[List[Any], ...]:
        """The estimator's four thunk lists, scope "<name>/<estimator name>"."""
        return self._fisher_est.create_ops_and_vars_thunks(
            scope=self._thunk_scope(), damping=self.damping)

    def _thunk_scope(self) -> str:
        return self.get_name() + "/" + self._fisher_est.name

    # ------------------------------------------------------------ training API

    def compute_gradients(self, *args: Any, **kwargs: Any) -> VarsAndVectors:
        """Base `compute_gradients`; `var_list` defaults to (and must equal)
        `self.variables` (ValueError naming missing/extra variables)."""
        call = arguments.bind_with_var_list(
            arguments.COMPUTE_GRADIENTS_SIGNATURE, self, args, kwargs)
        self._lint_once(call["loss"], call["var_list"])
        return super(KfacOptimizer, self).compute_gradients(**call)

    def _lint_once(self, loss: Any, var_list: Sequence[Any]) -> None:
        """Runs the registration linter on `loss` the first time it is seen."""
        if self._lint is None or not isinstance(loss, tf.Tensor):
            return
        if any(loss is seen for seen in self._linted_losses):
            return
        self._linted_losses.append(loss)
        self._layers.check_registration(var_list, loss=loss, lint=self._lint,
                                        original_checks=False)

    def apply_gradients(self, grads_and_vars: Any, global_step: Any = None,
                        name: Optional[str] = None) -> tf.Operation:
        """Applies `θ ← θ − η·step` with the K-FAC step of `_compute_update_steps`.

        Makes the estimator's ops first if no make method was called yet
        (implicit, deprecated path). `global_step` and `name` are used as by the
        base `apply_gradients`. Unless `non_finite_policy` is None, the step is
        applied only if every gradient, step and new velocity is finite (see
        `_optimizer.non_finite_guard`).
        """
        # A zip object can be iterated only once.
        grads_and_vars = list(grads_and_vars)
        arguments.check_var_list("grads_and_vars", [var for _, var in grads_and_vars],
                                 self.variables)
        missing = [var.name for grad, var in grads_and_vars if grad is None]
        if missing:
            raise ValueError("No gradient for variables {}: K-FAC needs a gradient "
                             "for every variable it optimises.".format(missing))
        self._implicit_ops.make_once()
        # Whatever the policy, so checkpoints hold the same variables.
        self._guard.skipped_steps  # noqa: B018
        base_apply = super(KfacOptimizer, self).apply_gradients
        if self._guard.policy is None:
            steps_and_vars = self._compute_update_steps(grads_and_vars)
            with tf.control_dependencies(self._step_statistics.take_pending()):
                return base_apply(steps_and_vars, global_step=global_step, name=name)
        return self._guard.apply_if_finite(
            grads_and_vars, self._compute_update_steps,
            lambda steps_and_vars, op_name: base_apply(steps_and_vars, name=op_name),
            lambda: self._call_if_callable(self._learning_rate), global_step, name,
            also_run=self._step_statistics.take_pending)

    def minimize(self, *args: Any, **kwargs: Any) -> tf.Operation:
        """Base `minimize` (same arguments), plus damping adaptation on a chief.

        With adaptation, `global_step` is required (KeyError otherwise); the
        damping update runs first, then the loss is stored as `prev_loss` and the
        training step is taken; both are returned grouped.
        """
        call = arguments.bind_with_var_list(
            arguments.MINIMIZE_SIGNATURE, self, args, kwargs)
        adapt = self._adaptation.adapting
        if adapt:
            arguments.check_global_step_for_adaptation(call)
        # Make the estimator's ops outside the scopes and control dependencies
        # below, so that running them never triggers the damping update.
        self._implicit_ops.make_once()
        with tf.variable_scope(self.get_name()):
            if not adapt:
                return super(KfacOptimizer, self).minimize(**call)
            with tf.control_dependencies([
                    self._adaptation.update_op(call["global_step"])]):
                loss_assign_op = self._adaptation.record_loss(
                    call["loss"], self.non_finite_policy)
                train_op = super(KfacOptimizer, self).minimize(**call)
            return tf.group(loss_assign_op, train_op)

    # ------------------------------------------------------------- the step

    def _learning_rate_as(self, dtype: tf.DType) -> tf.Tensor:
        return tf.cast(self._call_if_callable(self._learning_rate), dtype)

    def _compute_update_steps(self, grads_and_vars: VarsAndVectors) -> VarsAndVectors:
        """`[(step, var)]` for the momentum type (API.md §8 table)."""
        return self._update_rule.steps(grads_and_vars)

    # The original's private helpers and state (API.md §8 anchors, its tests).

    def _update_velocities(self, vecs_and_vars: VarsAndVectors, decay: Any,
                           vec_coeff: Any = 1.0) -> VarsAndVectors:
        return self._velocities.update(vecs_and_vars, decay, vec_coeff)

    def _compute_prev_updates(self, variables: Sequence[Any]) -> List[tf.Tensor]:
        return self._velocities.previous_updates(variables, self._learning_rate_as)

    def _squared_fisher_norm(self, grads_and_vars: VarsAndVectors,
                             precon_grads_and_vars: VarsAndVectors) -> tf.Tensor:
        return clipping.squared_fisher_norm(grads_and_vars, precon_grads_and_vars)

    def _update_clip_coeff(self, grads_and_vars: VarsAndVectors,
                           precon_grads_and_vars: VarsAndVectors) -> tf.Tensor:
        return self._clipping.coefficient(grads_and_vars, precon_grads_and_vars)

    def _clip_updates(self, grads_and_vars: VarsAndVectors,
                      precon_grads_and_vars: VarsAndVectors) -> VarsAndVectors:
        return self._clipping.clip(grads_and_vars, precon_grads_and_vars)

    def _compute_qmodel_hyperparams(
            self, precon_grads: Sequence[Any], prev_updates: Optional[Sequence[Any]],
            grads: Sequence[Any], variables: Sequence[Any]) -> Tuple[Any, Any, Any]:
        return self._quadratic_model.hyperparams(precon_grads, prev_updates, grads,
                                                 variables)

    _adapt_damping = property(lambda self: self._adaptation.enabled)
    _damping = property(lambda self: self._adaptation.variable)
    _rho = property(lambda self: self._adaptation.rho)
    _prev_loss = property(lambda self: self._adaptation.prev_loss)
    _q_model_change = property(lambda self: self._adaptation.q_model_change)
    _omega = property(lambda self: self._adaptation.rule.omega)
    _min_damping = property(lambda self: self._adaptation.rule.min_damping)
