"""The K-FAC optimizer (Martens & Grosse 2015): `KfacOptimizer` (API.md §8).

A `GradientDescentOptimizer` whose step is the K-FAC preconditioned gradient
`F̂⁻¹ g` (from a `FisherEstimator` built on a `LayerCollection`), combined with
momentum ("regular", "adam") or the 2-D quadratic model ("qmodel"), optionally
KL-clipped (`norm_constraint`) and with optional Levenberg-Marquardt damping
adaptation. The pieces live in `kfac.ops._optimizer`.

Port addition: a step whose gradient or update has a NaN/Inf never reaches the
weights, the velocities or the damping state (`non_finite_policy`).
"""

import collections
import contextlib
import inspect
import warnings
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
from kfac.ops._optimizer import damping_adaptation
from kfac.ops._optimizer import norm_constraint as clipping
from kfac.ops._optimizer import qmodel
from kfac.ops._optimizer.vectors import dense
from kfac.ops._optimizer.vectors import inner_product_list

# Module-private helpers named in API.md §8.
_inner_product_list = inner_product_list
_two_by_two_solve = qmodel.two_by_two_solve

_MINIMIZE_SIGNATURE = inspect.signature(tf.train.Optimizer.minimize)
_COMPUTE_GRADIENTS_SIGNATURE = inspect.signature(tf.train.Optimizer.compute_gradients)

_CONVENIENCE_DEPRECATION = (
    "The KfacOptimizer convenience properties (cov_update_op, inv_update_op, ...) "
    "and the implicit op creation in minimize/apply_gradients will be deprecated "
    "soon. Please use explicit op/thunk creation methods instead (e.g. "
    "make_ops_and_vars, make_vars_and_create_op_thunks).")

VarsAndVectors = List[Tuple[Any, Any]]


def _bind(signature: inspect.Signature, optimizer: Any, args: Sequence[Any],
          kwargs: dict) -> dict:
    """The explicitly passed arguments of a base-class call, all as keywords."""
    call = dict(signature.bind(optimizer, *args, **kwargs).arguments)
    del call["self"]
    return call


class KfacOptimizer(tf.train.GradientDescentOptimizer):
    """K-FAC: natural-gradient descent with a Kronecker-factored Fisher.

    One training step computes `p = F̂⁻¹ g` with the estimator's damped block-wise
    inverse, turns it into a step `s` according to `momentum_type` and applies
    `θ ← θ − learning_rate · s` through `GradientDescentOptimizer`. The Fisher
    factors and their inverses are refreshed by separate ops (`cov_update_op`,
    `inv_update_op`, or the explicit `make_*` methods) that the caller runs.

    Damping adaptation (`set_damping_adaptation_params`): unlike the original,
    where the estimator kept the construction-time damping and only the quadratic
    model saw the adapted value, here the estimator reads the optimizer's damping
    variable. Every inverse update therefore recomputes `(F̂ + λ)⁻¹` with the
    current `λ`. For this the adaptation must be enabled before any op is made.
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
        variables = tf.trainable_variables() if var_list is None else list(var_list)

        self._layers = layer_collection
        self._cov_ema_decay = cov_ema_decay
        self._estimation_mode = estimation_mode
        self._colocate_gradients_with_ops = colocate_gradients_with_ops
        self._momentum = momentum
        self._momentum_type = momentum_type
        self._norm_constraint = norm_constraint
        self._batch_size = batch_size
        self._placement_strategy = placement_strategy
        self._non_finite_policy = non_finite_policy
        self._num_skipped_steps = None  # created with the first guarded step
        # While a guarded step is built: the (variable, new value) writes of the
        # step (velocities, q_model_change), applied only if all are finite.
        self._deferred_writes = None

        # Damping adaptation; defaults until set_damping_adaptation_params.
        self._adapt_damping = False
        self._is_chief = False
        self._prev_train_batch = None
        self._loss_fn = None
        self._min_damping = 1e-5
        self._damping_adaptation_decay = 0.95
        self._damping_adaptation_interval = 5
        # ω of §6.5: the decay compounded over one adaptation interval.
        self._omega = self._damping_adaptation_decay**self._damping_adaptation_interval
        self._damping_constant = damping
        self._damping = None
        self._rho = None
        self._prev_loss = None
        self._q_model_change = None

        # Filled only by the implicit (deprecated) op creation.
        self._cov_update_ops = None
        self._cov_update_op = None
        self._inv_update_ops = None
        self._inv_update_op = None
        self._cov_update_thunks = None
        self._inv_update_thunks = None

        with tf.variable_scope(name) as scope:
            # Re-entered to create variables later under "<name>/" whatever the
            # caller's scope then is (minimize adds one of its own).
            self._variable_scope = scope
            self._fisher_est = est.make_fisher_estimator(
                placement_strategy=placement_strategy,
                variables=variables,
                cov_ema_decay=cov_ema_decay,
                damping=self.damping,
                layer_collection=layer_collection,
                exps=(-1,),
                estimation_mode=estimation_mode,
                colocate_gradients_with_ops=colocate_gradients_with_ops,
                non_finite_policy=non_finite_policy,
                **kwargs)
        super(KfacOptimizer, self).__init__(learning_rate, name=name)

    # ------------------------------------------------------------------ damping

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
        returns it). The estimator is switched to this variable, so the inverse
        updates use the adapted damping (fix of the original, API.md §12).

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
        if self._adapt_damping:
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
            self._rho = self._scalar_variable("rho", tf.zeros_initializer())
            self._prev_loss = self._scalar_variable("prev_loss", tf.zeros_initializer())
            self._q_model_change = self._scalar_variable(
                "q_model_change", tf.zeros_initializer())
            self._damping = tf.get_variable(
                "damping", initializer=self._initial_damping(), trainable=False)

        self._adapt_damping = True
        self._is_chief = is_chief
        self._prev_train_batch = prev_train_batch
        self._loss_fn = loss_fn
        self._min_damping = min_damping
        self._damping_adaptation_decay = damping_adaptation_decay
        self._damping_adaptation_interval = damping_adaptation_interval
        self._omega = damping_adaptation_decay**damping_adaptation_interval
        # The estimator wraps its damping in functions called when the inverse ops
        # are built, so a variable is read at every inverse update.
        self._fisher_est._damping = self._damping

    @staticmethod
    def _scalar_variable(name: str, initializer: Any) -> Any:
        return tf.get_variable(name, shape=(), dtype=tf.float32,
                               initializer=initializer, trainable=False)

    def _initial_damping(self) -> tf.Tensor:
        if arguments.is_number(self._damping_constant):
            return tf.constant(float(self._damping_constant), dtype=tf.float32)
        return tf.cast(self._damping_constant, tf.float32)

    def _update_damping(self, prev_batch: Any, global_step: Any) -> tf.Operation:
        """The op adapting `λ` on adaptation steps (set_damping_adaptation_params)."""
        def compute_rho():
            prev_batch_loss = tf.cast(self._loss_fn(prev_batch), tf.float32)
            return (prev_batch_loss - self._prev_loss) / self._q_model_change

        return damping_adaptation.make_damping_update_op(
            global_step, self._damping_adaptation_interval, compute_rho,
            self._damping, self._rho, self._omega, self._min_damping)

    # --------------------------------------------------------------- properties

    @property
    def variables(self) -> List[Any]:
        """The variables whose Fisher is estimated and which are optimised."""
        return self._fisher_est.variables

    @property
    def damping(self) -> Any:
        """The damping variable when adaptation is enabled, else the constant."""
        if self._damping is not None:
            return self._damping
        return self._damping_constant

    @property
    def damping_adaptation_interval(self) -> int:
        return self._damping_adaptation_interval

    @property
    def non_finite_policy(self) -> Optional[str]:
        """"skip", "raise" or None (see the constructor)."""
        return self._non_finite_policy

    @property
    def skipped_steps(self) -> tf.Variable:
        """int64 variable `<name>/num_skipped_steps`: training steps skipped
        because their gradient or update had a NaN/Inf ("skip" policy).

        Created with the first training op (whatever the policy) or on first
        access; a checkpoint saves it with the other optimizer state.
        """
        if self._num_skipped_steps is None:
            with tf.init_scope(), tf.variable_scope(
                    self._variable_scope, reuse=tf.AUTO_REUSE):
                self._num_skipped_steps = tf.get_variable(
                    "num_skipped_steps", shape=(), dtype=tf.int64,
                    initializer=tf.zeros_initializer(), trainable=False)
        return self._num_skipped_steps

    @property
    def skipped_factor_updates(self) -> tf.Tensor:
        """int64 scalar: non-finite covariance estimates (and inverses) that the
        factors did not write, summed over factors (their
        `num_skipped_updates` variables)."""
        return self._fisher_est.num_skipped_factor_updates()

    def _maybe_make_and_save_everything(self) -> None:
        """Implicit op creation: make and cache the estimator's ops once."""
        if not self._fisher_est.made_vars():
            warnings.warn(_CONVENIENCE_DEPRECATION, DeprecationWarning, stacklevel=3)
            (self._cov_update_ops, self._cov_update_op, self._inv_update_ops,
             self._inv_update_op, self._cov_update_thunks,
             self._inv_update_thunks) = self.make_ops_and_vars()

    def _cached(self, attribute: str) -> Any:
        self._maybe_make_and_save_everything()
        value = getattr(self, "_" + attribute)
        if value is None:
            raise AttributeError(
                "KfacOptimizer.{} is not available: the optimizer's ops were made "
                "through an explicit method (make_ops_and_vars, "
                "make_vars_and_create_op_thunks or create_ops_and_vars_thunks); use "
                "the ops or thunks that call returned.".format(attribute))
        return value

    @property
    def cov_update_thunks(self) -> List[Callable[[], Any]]:
        return self._cached("cov_update_thunks")

    @property
    def cov_update_ops(self) -> List[Any]:
        return self._cached("cov_update_ops")

    @property
    def cov_update_op(self) -> tf.Operation:
        return self._cached("cov_update_op")

    @property
    def inv_update_thunks(self) -> List[Callable[[], Any]]:
        return self._cached("inv_update_thunks")

    @property
    def inv_update_ops(self) -> List[Any]:
        return self._cached("inv_update_ops")

    @property
    def inv_update_op(self) -> tf.Operation:
        return self._cached("inv_update_op")

    # ---------------------------------------------------- explicit op creation

    def make_ops_and_vars(self) -> Tuple[Any, ...]:
        """The estimator's `(cov_update_ops, cov_update_op, inv_update_ops,
        inv_update_op, cov_update_thunks, inv_update_thunks)`, variables under
        the scope "<name>/"."""
        return self._fisher_est.make_ops_and_vars(scope=self.get_name())

    def make_vars_and_create_op_thunks(self) -> Tuple[List[Any], List[Any]]:
        """`(cov_update_thunks, inv_update_thunks)`, scope "<name>/<estimator name>"."""
        scope = self.get_name() + "/" + self._fisher_est.name
        return self._fisher_est.make_vars_and_create_op_thunks(scope=scope)

    def create_ops_and_vars_thunks(self) -> Tuple[List[Any], ...]:
        """The estimator's four thunk lists, scope "<name>/<estimator name>"."""
        scope = self.get_name() + "/" + self._fisher_est.name
        return self._fisher_est.create_ops_and_vars_thunks(scope=scope)

    # ------------------------------------------------------------ training API

    def _check_var_list(self, argument: str, var_list: Sequence[Any]) -> None:
        if not arguments.same_variables(var_list, self.variables):
            raise ValueError(arguments.describe_mismatch(
                argument, var_list, self.variables))

    def compute_gradients(self, *args: Any, **kwargs: Any) -> VarsAndVectors:
        """Base `compute_gradients`; `var_list` defaults to (and must equal)
        `self.variables` (ValueError naming missing/extra variables)."""
        call = _bind(_COMPUTE_GRADIENTS_SIGNATURE, self, args, kwargs)
        if call.get("var_list") is None:
            call["var_list"] = list(self.variables)
        self._check_var_list("var_list", call["var_list"])
        return super(KfacOptimizer, self).compute_gradients(**call)

    def apply_gradients(self, grads_and_vars: Any, global_step: Any = None,
                        name: Optional[str] = None) -> tf.Operation:
        """Applies `θ ← θ − η·step` with the K-FAC step of `_compute_update_steps`.

        Makes the estimator's ops first if no make method was called yet
        (implicit, deprecated path). `global_step` and `name` are used as by the
        base `apply_gradients`. Unless `non_finite_policy` is None, the step is
        applied only if every gradient, step and new velocity is finite (see
        `_apply_if_finite`).
        """
        # A zip object can be iterated only once.
        grads_and_vars = list(grads_and_vars)
        self._check_var_list("grads_and_vars", [var for _, var in grads_and_vars])
        missing = [var.name for grad, var in grads_and_vars if grad is None]
        if missing:
            raise ValueError("No gradient for variables {}: K-FAC needs a gradient "
                             "for every variable it optimises.".format(missing))
        self._maybe_make_and_save_everything()
        # Whatever the policy, so checkpoints hold the same variables.
        counter = self.skipped_steps
        if self._non_finite_policy is None:
            steps_and_vars = self._compute_update_steps(grads_and_vars)
            return super(KfacOptimizer, self).apply_gradients(
                steps_and_vars, global_step=global_step, name=name)
        return self._apply_if_finite(grads_and_vars, global_step, name, counter)

    @contextlib.contextmanager
    def _deferring_writes(self):
        """Collects the step's variable writes instead of making them (yields the
        list of `(variable, new value)`); see `_update_velocities`."""
        self._deferred_writes = []
        try:
            yield self._deferred_writes
        finally:
            self._deferred_writes = None

    def _apply_if_finite(self, grads_and_vars: VarsAndVectors, global_step: Any,
                         name: Optional[str], counter: tf.Variable) -> tf.Operation:
        """The training step, applied only when all its values are finite.

        The step is first built without side effects: the new velocities (and
        the quadratic model's predicted change) are computed but their writes
        deferred. Then, if every gradient, step, deferred value and the learning
        rate are finite, the writes and `θ ← θ − η·step` run; otherwise nothing
        is written and ("skip") `counter` (`skipped_steps`) is incremented, or
        ("raise") the op fails naming the variables. `global_step` advances in
        both cases.
        """
        with self._deferring_writes() as writes:
            steps_and_vars = self._compute_update_steps(grads_and_vars)
        checked = collections.OrderedDict()
        for (grad, var), (step, _) in zip(grads_and_vars, steps_and_vars):
            checked[var.op.name] = [grad, step]
        known = {id(value) for values in checked.values() for value in values}
        for variable, value in writes:
            if id(value) not in known:
                checked.setdefault(variable.op.name, []).append(value)
        learning_rate = self._call_if_callable(self._learning_rate)
        if not arguments.is_number(learning_rate):
            checked["learning_rate"] = [learning_rate]
        train_ops = tf.get_collection_ref(tf.GraphKeys.TRAIN_OP)
        train_ops_before = list(train_ops)

        def apply_step():
            assignments = []
            for variable, value in writes:
                with tf.colocate_with(variable):
                    assignments.append(tf.assign(variable, value).op)
            with tf.control_dependencies(assignments):
                update = super(KfacOptimizer, self).apply_gradients(
                    steps_and_vars, name=name)
            with tf.control_dependencies([update]):
                return tf.constant(True)

        def skip_step():
            increment = counter.assign_add(tf.constant(1, dtype=tf.int64),
                                           read_value=False)
            with tf.control_dependencies([increment]):
                return tf.constant(False)

        applied = utils.update_if_finite(
            list(checked.items()), apply_step, skip_step, self._non_finite_policy,
            "the gradient or K-FAC update of")
        with tf.control_dependencies([applied]):
            if global_step is None:
                train_op = tf.group(applied, name=name)
            else:
                with tf.colocate_with(global_step):
                    train_op = global_step.assign_add(
                        tf.constant(1, dtype=global_step.dtype.base_dtype),
                        name=name, read_value=False)
        # The base apply_gradients registered its op (built inside the tf.cond);
        # the op to run is the one returned here.
        train_ops[:] = train_ops_before + [train_op]
        return train_op

    def minimize(self, *args: Any, **kwargs: Any) -> tf.Operation:
        """Base `minimize` (same arguments), plus damping adaptation on a chief.

        With adaptation, `global_step` is required (KeyError otherwise); the
        damping update runs first, then the loss is stored as `prev_loss` and the
        training step is taken; both are returned grouped.
        """
        call = _bind(_MINIMIZE_SIGNATURE, self, args, kwargs)
        if call.get("var_list") is None:
            call["var_list"] = list(self.variables)
        self._check_var_list("var_list", call["var_list"])
        adapt = self._adapt_damping and self._is_chief
        if adapt and call.get("global_step") is None:
            raise KeyError("global_step needs to be passed to optimizer.minimize if "
                           "damping parameter is adapted.")
        # Make the estimator's ops outside the scopes and control dependencies
        # below, so that running them never triggers the damping update.
        self._maybe_make_and_save_everything()
        with tf.variable_scope(self.get_name()):
            if not adapt:
                return super(KfacOptimizer, self).minimize(**call)
            update_damping_op = self._update_damping(self._prev_train_batch,
                                                     call["global_step"])
            with tf.control_dependencies([update_damping_op]):
                loss = tf.cast(call["loss"], tf.float32)
                if self._non_finite_policy is not None:
                    # A NaN loss would make every later ρ NaN (λ frozen).
                    loss = tf.where(tf.math.is_finite(loss), loss, self._prev_loss)
                loss_assign_op = tf.assign(self._prev_loss, loss)
                train_op = super(KfacOptimizer, self).minimize(**call)
            return tf.group(loss_assign_op, train_op)

    # ------------------------------------------------------------- the step

    def _learning_rate_as(self, dtype: tf.DType) -> tf.Tensor:
        return tf.cast(self._call_if_callable(self._learning_rate), dtype)

    def _compute_update_steps(self, grads_and_vars: VarsAndVectors) -> VarsAndVectors:
        """`[(step, var)]` for the momentum type (API.md §8 table)."""
        if self._momentum_type == "regular":
            precon_grads_and_vars = self._fisher_est.multiply_inverse(grads_and_vars)
            if self._norm_constraint is not None:
                precon_grads_and_vars = self._clip_updates(grads_and_vars,
                                                           precon_grads_and_vars)
            dependencies = []
            if self._adapt_damping and self._is_chief:
                _, _, q_model_change = self._compute_qmodel_hyperparams_wrapper(
                    grads_and_vars, precon_grads_and_vars)
                dependencies = [q_model_change]
            with tf.control_dependencies(dependencies):
                return self._update_velocities(precon_grads_and_vars, self._momentum)

        if self._momentum_type == "adam":
            velocities_and_vars = self._update_velocities(grads_and_vars,
                                                          self._momentum)
            steps_and_vars = self._fisher_est.multiply_inverse(velocities_and_vars)
            if not (self._adapt_damping and self._is_chief):
                return steps_and_vars
            # The velocity slot holds accumulated gradients, not the previous
            # update, so the model is taken along the step direction alone (μ = 0).
            _, _, q_model_change = self._assign_q_model_change(
                *self._compute_qmodel_hyperparams(
                    [step for step, _ in steps_and_vars], None,
                    [grad for grad, _ in grads_and_vars],
                    [var for _, var in grads_and_vars]))
            with tf.control_dependencies([q_model_change]):
                return [(tf.identity(dense(step)), var) for step, var in steps_and_vars]

        precon_grads_and_vars = self._fisher_est.multiply_inverse(grads_and_vars)
        alpha, mu, q_model_change = self._compute_qmodel_hyperparams_wrapper(
            grads_and_vars, precon_grads_and_vars)
        with tf.control_dependencies([q_model_change]):
            return self._update_velocities(precon_grads_and_vars, mu, vec_coeff=-alpha)

    def _update_velocities(self, vecs_and_vars: VarsAndVectors, decay: Any,
                           vec_coeff: Any = 1.0) -> VarsAndVectors:
        """`v ← decay·v + vec_coeff·vec` for each pair; returns `[(new v, var)]`.

        The "velocity" slot is created (zeros) on first use; the assignment is
        colocated with it and the returned tensor reads the updated value.
        """
        def update_velocity(vec, var):
            velocity = self._zeros_slot(var, "velocity", self._name)
            with tf.colocate_with(velocity):
                # Read/modify/write: not safe for asynchronous updates.
                scaled = dense(vec)
                if not (arguments.is_number(vec_coeff) and vec_coeff == 1.0):
                    # (A multiplication by 1 would be one more pass over the
                    # parameters.)
                    scaled = vec_coeff * scaled
                new_velocity = decay * velocity + scaled
                if self._deferred_writes is not None:
                    # A guarded step writes it only if everything is finite.
                    self._deferred_writes.append((velocity, new_velocity))
                    return new_velocity, var
                return tf.identity(velocity.assign(new_velocity)), var

        return [update_velocity(vec, var) for vec, var in vecs_and_vars]

    # ---------------------------------------------------------- norm constraint

    def _squared_fisher_norm(self, grads_and_vars: VarsAndVectors,
                             precon_grads_and_vars: VarsAndVectors) -> tf.Tensor:
        """`Σ ⟨g, p⟩` = `pᵀF̂p`; ValueError unless the variables pair up."""
        return clipping.squared_fisher_norm(grads_and_vars, precon_grads_and_vars)

    def _update_clip_coeff(self, grads_and_vars: VarsAndVectors,
                           precon_grads_and_vars: VarsAndVectors) -> tf.Tensor:
        """`κ = min(1, sqrt(C / (η² Σ⟨g, p⟩)))` (Ba et al. 2017, §5)."""
        sq_norm = self._squared_fisher_norm(grads_and_vars, precon_grads_and_vars)
        return clipping.clip_coefficient(
            sq_norm, self._learning_rate_as(sq_norm.dtype), self._norm_constraint)

    def _clip_updates(self, grads_and_vars: VarsAndVectors,
                      precon_grads_and_vars: VarsAndVectors) -> VarsAndVectors:
        """`[(κ·p, var)]`."""
        coeff = self._update_clip_coeff(grads_and_vars, precon_grads_and_vars)
        return clipping.scale_vectors(precon_grads_and_vars, coeff)

    # ---------------------------------------------------------- quadratic model

    def _compute_prev_updates(self, variables: Sequence[Any]) -> List[tf.Tensor]:
        """The previous update `δ = −η·v` of each variable (`v` its velocity)."""
        prev_updates = []
        for var in variables:
            velocity = self._zeros_slot(var, "velocity", self._name)
            learning_rate = self._learning_rate_as(velocity.dtype.base_dtype)
            prev_updates.append(-learning_rate * velocity)
        return prev_updates

    def _compute_qmodel_hyperparams(
            self, precon_grads: Sequence[Any], prev_updates: Optional[Sequence[Any]],
            grads: Sequence[Any],
            variables: Sequence[Any]) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`(α, μ, q)` minimising the quadratic model (Martens & Grosse, §7).

        Uses the exact mini-batch Fisher products `Bᵀ J Δ` and `Bᵀ J δ` of the
        layer collection's losses (one shared backward graph; see
        `_optimizer.qmodel`), `n = batch_size` and `λ = self.damping`.
        `prev_updates=None` means no previous-update direction (`μ = 0`).
        """
        if self._batch_size is None:
            raise ValueError("batch_size is required to compute the quadratic model "
                             "(momentum_type 'qmodel' or damping adaptation).")
        vectors_list = [precon_grads]
        if prev_updates is not None:
            vectors_list.append(prev_updates)
        products = qmodel.fisher_factor_transpose_products(
            self._layers.losses, variables, vectors_list,
            colocate_gradients_with_ops=self._colocate_gradients_with_ops)
        return qmodel.quadratic_model_hyperparams(
            grads, precon_grads, prev_updates, products[0],
            products[1] if prev_updates is not None else None,
            self.damping, self._batch_size)

    def _assign_q_model_change(self, alpha: tf.Tensor, mu: tf.Tensor,
                               q_model_change: tf.Tensor) -> Tuple[Any, Any, Any]:
        """`(α, μ, op)` where op stores `q` on an adapting chief (else a no-op)."""
        if not (self._adapt_damping and self._is_chief):
            return alpha, mu, tf.no_op()
        q_model_change = tf.cast(q_model_change, tf.float32)
        if self._deferred_writes is not None:
            self._deferred_writes.append((self._q_model_change, q_model_change))
            return alpha, mu, tf.no_op()
        return alpha, mu, tf.assign(self._q_model_change, q_model_change)

    def _compute_qmodel_hyperparams_wrapper(
            self, grads_and_vars: VarsAndVectors,
            precon_grads_and_vars: VarsAndVectors) -> Tuple[Any, Any, Any]:
        """`(α, μ, op storing q)` with `Δ = p` and `δ` the previous update."""
        variables = [var for _, var in grads_and_vars]
        return self._assign_q_model_change(*self._compute_qmodel_hyperparams(
            [pgrad for pgrad, _ in precon_grads_and_vars],
            self._compute_prev_updates(variables),
            [grad for grad, _ in grads_and_vars], variables))
