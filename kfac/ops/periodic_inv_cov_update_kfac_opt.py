"""K-FAC with its statistics and inverses refreshed by the training op itself.

`PeriodicInvCovUpdateKfacOpt` (API.md §15, the kfac 0.2 class of the same name)
is a `KfacOptimizer` whose training op also runs the covariance updates every
`cov_update_every` steps and the inverse updates every `invert_every` steps,
after optional burn-in steps that only accumulate statistics. Port addition:
`spread_inverse_updates` refreshes the inverses in cost-balanced groups, one
group per step, so that no step pays for all of them; `invert_every="adaptive"`
recomputes a factor's inverse only when its moving average has drifted from
the one it was computed from (`drift.py`).
"""

import numbers
from typing import Any
from typing import Callable
from typing import List
from typing import NamedTuple
from typing import Optional
from typing import Sequence
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops import fisher_factors
from kfac.ops import optimizer
from kfac.ops._optimizer import arguments
from kfac.ops._optimizer import drift


def _check_int(name: str, value: Any, minimum: int) -> int:
    """`value` as an int; ValueError naming `name` unless an integer ≥ minimum."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
    ):
        expected = "a positive integer" if minimum == 1 else "a nonnegative integer"
        raise ValueError("{} must be {}; got {!r}.".format(name, expected, value))
    return int(value)


def inverse_update_cost(factor: Any) -> int:
    """Estimated cost of `factor`'s inverse update: the cube of its matrix side
    (a Cholesky inverse or an eigendecomposition of an `n × n` matrix is O(n³)).

    The side is the first entry of the factor's `cov_shape`.
    """
    side = tf.compat.dimension_value(tf.TensorShape(factor.cov_shape)[0])
    return int(side) ** 3


def partition_by_cost(costs: Sequence[float], num_groups: int) -> List[List[int]]:
    """Splits the indices of `costs` into `num_groups` groups of similar total cost.

    Greedy "longest processing time first": the indices are taken by decreasing
    cost (ties: lower index first) and each goes to the group with the lowest
    total so far (ties: lower group index). Every group's total then exceeds
    the ideal `sum / num_groups` by at most the largest single cost.

    Returns:
      `num_groups` lists of indices, each sorted; some may be empty.
    """
    groups = [[] for _ in range(num_groups)]
    totals = [0] * num_groups
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        lightest = min(range(num_groups), key=lambda g: (totals[g], g))
        groups[lightest].append(index)
        totals[lightest] += costs[index]
    return [sorted(group) for group in groups]


def _run_if(predicate: tf.Tensor, thunks: Sequence[Callable[[], Any]],
            name: str) -> tf.Tensor:
    """A bool Tensor: True after running the ops of `thunks` when `predicate`
    holds, False (and nothing run) otherwise. The thunks are called once, here."""

    def run():
        with tf.control_dependencies([thunk() for thunk in thunks]):
            return tf.constant(True)

    return tf.cond(predicate, run, lambda: tf.constant(False), name=name)


class _Schedule(NamedTuple):
    """What one run of the training op does, from the counter's value `c`."""

    counter_value: tf.Tensor  # c, read once per run
    training: Optional[tf.Tensor]  # c ≥ num_burnin_steps; None without burn-in
    cov_due: tf.Tensor
    inverse_due: List[tf.Tensor]  # one per group of `inverse_update_groups`

    @property
    def predicates(self) -> List[tf.Tensor]:
        optional = [] if self.training is None else [self.training]
        return [self.cov_due] + self.inverse_due + optional


class PeriodicInvCovUpdateKfacOpt(optimizer.KfacOptimizer):
    """A `KfacOptimizer` whose training op also refreshes statistics and inverses.

    What: the op returned by `minimize` (or `apply_gradients`) is the only one
    to run. Each run does, in this order: the covariance update of every factor
    (when due), the inverse updates (when due), the K-FAC training step (which
    reads the inverses just written), and `counter += 1`.

    Why: a K-FAC step costs more than an SGD step mostly because of the
    statistics (one extra backward pass and matrix products per factor) and the
    inverses (O(n³) per factor). Both change slowly, so refreshing them every
    few steps amortises their cost at almost no loss per step (Martens & Grosse
    2015, §8). The covariance moving averages use the decay
    `cov_ema_decay ** cov_update_every`, so they still average over the same
    number of steps. (A skipped covariance update saves the factors' products
    and moving averages; the backward pass giving the factors' gradient
    signals is built by the estimator outside the update's `tf.cond` and
    still runs every step.)

    Schedule, with `c` the value of `counter` when the op runs (runs so far,
    burn-in included), `B = num_burnin_steps`, `I = invert_every`:

    * burn-in, `c < B`: covariance update only; weights, velocities, damping
      state (`damping`, `rho`, `prev_loss`, `q_model_change`) and
      `global_step` are unchanged.
    * then, with `k = c − B`: covariance update iff `k % cov_update_every == 0`;
      all inverses iff `k % I == 0`; the training step always.
    * `spread_inverse_updates=True`: the inverse-update ops (one per factor)
      are split once into `I` groups of similar cost (`inverse_update_cost`,
      greedy largest first, `partition_by_cost`). At `k == 0` every inverse is
      computed; afterwards step `k` refreshes group `k % I` only. Every inverse
      is thus refreshed once every `I` steps, and a step pays for about `1/I`
      of them. The groups are `inverse_update_groups`.

    A step skipped for a non-finite gradient (`non_finite_policy="skip"`) still
    counts in `counter`. Damping adaptation (`set_damping_adaptation_params`)
    adapts before the inverse updates, so these use the new damping; it is
    skipped during burn-in.

    Usage:

        opt = kfac.PeriodicInvCovUpdateKfacOpt(
            invert_every=10, cov_update_every=2, num_burnin_steps=5,
            learning_rate=0.01, cov_ema_decay=0.95, damping=0.01,
            layer_collection=layer_collection, momentum=0.9)
        train_op = opt.minimize(loss, global_step=global_step)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(num_steps):
                sess.run(train_op)

    The factor variables and update ops are made by the first `minimize` or
    `apply_gradients`; do not call the `make_*` methods or the convenience
    op properties (`cov_update_op`, ...) yourself.
    """

    def __init__(self,
                 invert_every: Any = 10,
                 cov_update_every: int = 1,
                 num_burnin_steps: int = 0,
                 *,
                 spread_inverse_updates: bool = False,
                 max_drift: Optional[float] = None,
                 min_every: Optional[int] = None,
                 max_every: Optional[int] = None,
                 **kwargs: Any) -> None:
        """Builds the optimizer; `counter` is created here.

        Args:
          invert_every: steps between inverse updates (positive int), or
            "adaptive": each factor's inverse is recomputed when its drift
            exceeds `max_drift` (see `drift.DriftSchedule`), at most every
            `min_every` and at least every `max_every` steps.
          cov_update_every: steps between covariance updates (positive int).
          num_burnin_steps: initial steps doing only covariance updates
            (nonnegative int).
          spread_inverse_updates: refresh one cost-balanced group of inverses
            per step instead of all of them every `invert_every` steps.
          **kwargs: `KfacOptimizer` arguments by keyword (`learning_rate`,
            `cov_ema_decay`, `damping`, `layer_collection`, `momentum`, ...).
            The estimator receives `cov_ema_decay ** cov_update_every`.
          max_drift, min_every, max_every: the adaptive schedule (only with
            `invert_every="adaptive"`; defaults 0.1, 1 and 50).

        Raises:
          ValueError: for an argument above out of range or of the wrong type
            (the message names it), or any `KfacOptimizer` argument error.
        """
        self._drift = drift.schedule_from_arguments(
            invert_every, max_drift, min_every, max_every)
        if self._drift is not None:
            invert_every = self._drift.max_every
        self._invert_every = _check_int("invert_every", invert_every, 1)
        self._cov_update_every = _check_int("cov_update_every", cov_update_every, 1)
        self._num_burnin_steps = _check_int("num_burnin_steps", num_burnin_steps, 0)
        if not isinstance(spread_inverse_updates, bool):
            raise ValueError("spread_inverse_updates must be a bool; got {!r}.".format(
                spread_inverse_updates))
        self._spread_inverse_updates = spread_inverse_updates
        if "cov_ema_decay" in kwargs:
            # Checked before raising to the power, so the message shows the
            # value the user gave.
            arguments.check_in_unit_interval(
                "cov_ema_decay", kwargs["cov_ema_decay"], include_one=True)
            kwargs["cov_ema_decay"] = kwargs["cov_ema_decay"] ** self._cov_update_every
        super(PeriodicInvCovUpdateKfacOpt, self).__init__(**kwargs)
        # Indices into the inverse-update thunks; set when the ops are made.
        self._inverse_groups = None
        self._drift_states = None
        with tf.init_scope(), tf.variable_scope(self.variable_scope):
            self._counter = tf.get_variable(
                "counter", shape=(), dtype=tf.int64,
                initializer=tf.zeros_initializer(), trainable=False)

    # --------------------------------------------------------------- properties

    @property
    def updates_curvature_in_train_op(self) -> bool:
        """True: the training op runs the covariance and inverse updates."""
        return True

    @property
    def counter(self) -> tf.Variable:
        """int64 variable `<name>/counter`: runs of the training op so far
        (burn-in and skipped non-finite steps included)."""
        return self._counter

    @property
    def invert_every(self) -> int:
        """The inverse period; with the adaptive schedule, its `max_every`."""
        return self._invert_every

    @property
    def drift_schedule(self) -> Optional["drift.DriftSchedule"]:
        """The adaptive inverse schedule, or None for a fixed period."""
        return self._drift

    @property
    def inverse_update_counts(self) -> Optional[dict]:
        """`{factor name: int64 variable}`: inverse updates of each factor so
        far, under the adaptive schedule (None otherwise, or before the ops
        are made)."""
        if self._drift is None or self._drift_states is None:
            return None
        return {state.factor.name: state.count
                for state in self._drift_states.values()}

    @property
    def cov_update_every(self) -> int:
        return self._cov_update_every

    @property
    def num_burnin_steps(self) -> int:
        return self._num_burnin_steps

    @property
    def spread_inverse_updates(self) -> bool:
        return self._spread_inverse_updates

    @property
    def inverse_update_groups(self) -> Optional[Tuple[Tuple[Any, ...], ...]]:
        """The factors whose inverses each step refreshes, as groups.

        With `spread_inverse_updates`, `invert_every` groups (group `g` runs at
        steps `k ≡ g mod invert_every`, all of them at `k == 0`; some may be
        empty); otherwise one group with every factor. Factors without inverse
        variables (diagonal ones) are left out. None until the ops are made.
        """
        if self._inverse_groups is None:
            return None
        factors = list(self.estimator.factors)
        return tuple(tuple(factors[index] for index in group)
                     for group in self._inverse_groups)

    # ----------------------------------------------------------- op creation

    def _make_vars_and_thunks_once(self) -> None:
        """Makes the factor variables and update thunks, and the inverse groups."""
        if self._inverse_groups is not None:
            return
        if self.estimator.made_vars():
            raise ValueError(
                "PeriodicInvCovUpdateKfacOpt makes the estimator's variables and ops "
                "in its first minimize/apply_gradients; they were already made (a "
                "make_* method or a convenience property such as cov_update_op was "
                "used). Run only the op that minimize returns.")
        # Outside any control dependency or control flow of the caller: variable
        # initializers must not depend on training ops.
        with tf.control_dependencies(None):
            self._cov_update_thunks, self._inv_update_thunks = (
                self.make_vars_and_create_op_thunks())
        factors = list(self.estimator.factors)
        with_inverses = [index for index, factor in enumerate(factors)
                         if not isinstance(factor, fisher_factors.DiagonalFactor)]
        if self._drift is not None:
            with tf.init_scope(), tf.variable_scope(self.variable_scope):
                self._drift_states = {
                    index: drift.DriftState(factors[index]) for index in with_inverses}
        if not self._spread_inverse_updates:
            self._inverse_groups = [with_inverses]
            return
        costs = [inverse_update_cost(factors[index]) for index in with_inverses]
        self._inverse_groups = [
            [with_inverses[position] for position in group]
            for group in partition_by_cost(costs, self._inverse_period)]

    @property
    def _inverse_period(self) -> int:
        """Steps over which the spread groups take turns: `invert_every`, or
        the adaptive schedule's `min_every`."""
        return self._invert_every if self._drift is None else self._drift.min_every

    def _schedule(self) -> _Schedule:
        """The predicates of one run, from the counter read once (see class doc)."""
        counter_value = self._counter.read_value()
        burnin = tf.constant(self._num_burnin_steps, tf.int64)
        training = None
        if self._num_burnin_steps:
            training = tf.greater_equal(counter_value, burnin, name="after_burnin")
        step = counter_value - burnin

        def every(period: int, remainder: int = 0) -> tf.Tensor:
            due = tf.equal(tf.math.floormod(step, period), remainder)
            return due if training is None else tf.logical_and(training, due)

        cov_due = every(self._cov_update_every)
        if training is not None:
            cov_due = tf.logical_or(tf.logical_not(training), cov_due)
        period = 1 if self._drift is not None else self._invert_every
        if self._spread_inverse_updates:
            period = self._inverse_period
            first = tf.equal(step, 0)
            inverse_due = [tf.logical_or(first, every(period, group))
                           for group in range(period)]
        else:
            inverse_due = [every(period)]
        return _Schedule(counter_value, training, cov_due, inverse_due)

    def _maintenance(self, schedule: _Schedule) -> tf.Tensor:
        """Covariance updates, then inverse updates, as due; the op ordering the
        inverse updates after the covariance updates. Returns a grouped op."""
        with tf.name_scope("periodic_updates"):
            cov_update = _run_if(schedule.cov_due, self._cov_update_thunks,
                                 "cov_update")
            inverse_updates = []
            with tf.control_dependencies([cov_update]):
                for index, (group, due) in enumerate(
                        zip(self._inverse_groups, schedule.inverse_due)):
                    if group and self._drift is not None:
                        inverse_updates.extend(self._drift_refreshes(
                            group, due, schedule.counter_value))
                    elif group:
                        thunks = [self._inv_update_thunks[i] for i in group]
                        inverse_updates.append(
                            _run_if(due, thunks, "inverse_update_%d" % index))
            return tf.group(cov_update, *inverse_updates)

    def _drift_refreshes(self, group: Sequence[int], checked: tf.Tensor,
                         counter_value: tf.Tensor) -> List[tf.Tensor]:
        """Per factor of `group`: its inverse update and state record, run when
        `checked` and the drift schedule says it is due."""
        refreshes = []
        for index in group:
            state = self._drift_states[index]
            due = tf.logical_and(checked, state.is_due(self._drift, counter_value))
            thunk = self._inv_update_thunks[index]
            refreshes.append(_run_if(
                due, [thunk, lambda state=state: state.record(counter_value)],
                "inverse_update_%d" % index))
        return refreshes

    def _periodic_train_op(self, grads_and_vars: Sequence[Tuple[Any, Any]],
                           global_step: Any, name: Optional[str],
                           schedule: _Schedule,
                           loss_to_record: Any = None) -> tf.Operation:
        """Maintenance, the (burn-in gated) K-FAC step, then `counter += 1`.

        `loss_to_record` (damping adaptation on a chief) is written to
        `prev_loss` by training steps, as `KfacOptimizer.minimize` does.
        """
        train_ops = tf.get_collection_ref(tf.GraphKeys.TRAIN_OP)
        train_ops_before = list(train_ops)
        maintenance = self._maintenance(schedule)

        def train_step():
            writes = []
            if loss_to_record is not None:
                writes.append(self.damping_adaptation.record_loss(
                    loss_to_record, self.non_finite_policy))
            step = super(PeriodicInvCovUpdateKfacOpt, self).apply_gradients(
                grads_and_vars, global_step=global_step)
            with tf.control_dependencies([step] + writes):
                return tf.constant(True)

        # Everything built here reads the inverses after their updates: a
        # resource variable's read ops and a ref variable's consumers are
        # created under this control dependency.
        with tf.control_dependencies([maintenance]):
            if schedule.training is None:
                applied = train_step()
            else:
                applied = tf.cond(schedule.training, train_step,
                                  lambda: tf.constant(False), name="train_step")
        # A ref variable's read aliases its buffer: increment only after every
        # use of the counter's value.
        with tf.control_dependencies([applied] + schedule.predicates):
            with tf.colocate_with(self._counter):
                increment = self._counter.assign_add(
                    tf.constant(1, tf.int64), read_value=False)
        train_op = tf.group(increment, name=name or "periodic_train_op")
        # The steps built above registered their (inner) ops; the op to run is
        # this one.
        train_ops[:] = train_ops_before + [train_op]
        return train_op

    # ------------------------------------------------------------ training API

    def apply_gradients(self, grads_and_vars: Any, global_step: Any = None,
                        name: Optional[str] = None) -> tf.Operation:
        """The periodic training op for these gradients (see the class doc).

        Checks as `KfacOptimizer.apply_gradients` (ValueError for a var_list
        mismatch or a missing gradient).
        """
        grads_and_vars = list(grads_and_vars)
        self._make_vars_and_thunks_once()
        return self._periodic_train_op(grads_and_vars, global_step, name,
                                       self._schedule())

    def minimize(self, *args: Any, **kwargs: Any) -> tf.Operation:
        """`KfacOptimizer.minimize` (same arguments) with the periodic training op.

        With damping adaptation on a chief (`global_step` required, KeyError
        otherwise), the damping update runs first, gated by the burn-in, then
        the covariance and inverse updates (which use the new damping), then
        the training step, which also records the loss as `prev_loss`.
        """
        self._make_vars_and_thunks_once()
        if not self.damping_adaptation.adapting:
            return super(PeriodicInvCovUpdateKfacOpt, self).minimize(*args, **kwargs)
        call = arguments.bind_with_var_list(arguments.MINIMIZE_SIGNATURE, self, args,
                                            kwargs)
        arguments.check_global_step_for_adaptation(call)
        global_step = call["global_step"]
        with tf.variable_scope(self.get_name()):
            schedule = self._schedule()
            update_damping = self._update_damping_after_burnin(schedule, global_step)
            with tf.control_dependencies([update_damping]):
                grads_and_vars = self.compute_gradients(
                    call["loss"], var_list=call["var_list"],
                    gate_gradients=call.get("gate_gradients",
                                            tf.train.Optimizer.GATE_OP),
                    aggregation_method=call.get("aggregation_method"),
                    colocate_gradients_with_ops=call.get(
                        "colocate_gradients_with_ops", False),
                    grad_loss=call.get("grad_loss"))
                return self._periodic_train_op(
                    grads_and_vars, global_step, call.get("name"), schedule,
                    loss_to_record=call["loss"])

    def _update_damping_after_burnin(self, schedule: _Schedule,
                                     global_step: Any) -> Any:
        """The damping adaptation's update op, not run during burn-in."""
        def update():
            with tf.control_dependencies([
                    self.damping_adaptation.update_op(global_step)]):
                return tf.constant(True)

        if schedule.training is None:
            return update()
        return tf.cond(schedule.training, update, lambda: tf.constant(False),
                       name="update_damping_after_burnin")
