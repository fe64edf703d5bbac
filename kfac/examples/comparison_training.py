"""Training runs for a comparison of optimizers: specs, their ops, the timed loop.

An `OptimizerSpec` names one optimizer configuration; `make_train_ops` builds
its training op on a model; `Trainer` runs its steps; `train_one` trains one
spec from a fixed start with the clock counting only training and returns
the run's record (see `comparison`); `new_record`, `train_all` and
`add_reference_target` make the record of several runs. The model comes
from a `build_graph(spec, settings, input_size) -> TrainingGraph` function
(the deep autoencoder's `autoencoder_mnist.build_training_graph`): its
`model` has the placeholder `inputs`, the scalar `loss` and
`loss_fn(inputs)` (the loss on other inputs, for K-FAC's damping adaptation).
"""

import dataclasses
import math
import os
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional
from typing import Sequence

import numpy as np
import tensorflow.compat.v1 as tf

import kfac
from kfac.examples import _health_plot
from kfac.examples import _tensorboard
from kfac.examples import _training
from kfac.examples import comparison

OPTIMIZER_KINDS = ("sgd", "adam", "kfac", "kfac_qmodel")
# What a learning-rate decay counts: steps, or fractions of the time budget.
DECAY_CLOCKS = ("steps", "budget")
# Graph collection of the scalar placeholder that `Trainer` feeds with the
# fraction of the time budget spent before each step (`decay_clock="budget"`).
BUDGET_SPENT = "budget_spent"


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer configuration.

    `kind` is one of OPTIMIZER_KINDS: `"sgd"` (momentum SGD), `"adam"`,
    `"kfac"` (K-FAC, regular momentum, fixed damping) or `"kfac_qmodel"`
    (K-FAC choosing learning rate and momentum from the quadratic model, with
    Levenberg-Marquardt damping adaptation starting at `damping`). `label`
    names the run in records and tables (default: `kind`).

    K-FAC runs use `kfac.PeriodicInvCovUpdateKfacOpt`: the training op itself
    updates the covariances every `cov_update_every` steps and the inverses
    every `inv_update_every` steps (spread over the steps in between with
    `spread_inverse_updates`). With `warm_start_covariances` the covariances
    start at zero with a debiased moving average (the `LayerCollection`'s
    `KfacConfig(init_covariances_at_zero=True, zero_debias=True)`, see
    `layer_collection_for`), so the first steps precondition with the statistics
    of the batches seen so far rather than with an identity blended into them.
    `approximation` (e.g. `"ekfac"`) is the collection's default for fully
    connected and conv2d layers registered without one (None: `"kron"`).
    With `max_drift`, inverses are refreshed by drift
    (`invert_every="adaptive"`) with `inv_update_every` as the longest period.
    `norm_constraint` bounds the squared Fisher norm of a K-FAC update (KL
    clipping, Ba et al. 2017; None: no bound). A clipped update's size is
    `sqrt(C / pᵀF̂p)` whatever the learning rate, so a learning-rate decay
    leaves it alone until the bound stops binding; with
    `scheduled_norm_constraint` the bound follows the decay (`C · s²`, `s`
    the schedule's factor, `norm_constraint_of`), so that clipped and
    unclipped updates shrink alike. `sub_sample_inputs` and
    `sub_sample_patches` estimate every convolution's input factor from a
    random part of the examples / patches (`KfacConfig`'s fields).
    `min_damping` is the floor of the quadratic model's adapted damping.
    With `decay_half_life` (steps), the learning rate is halved every that
    many steps after the first `decay_start` steps (for the quadratic model:
    its chosen step is scaled by it), a schedule for the noise-dominated
    later phase of training. With `decay_clock="budget"` both are instead
    fractions of the run's time budget (`max_seconds`): every optimizer then
    anneals at the same seconds, whatever its cost per step. With
    `stats_batch_fraction`, K-FAC's curvature statistics come from a second
    forward pass (same variables) on the first
    `ceil(fraction · batch_size)` examples of each batch: only that pass is
    registered, the loss and its gradient still use the whole batch
    (`build_training_graph`).
    With `weight_decay` (decoupled weight decay, Loshchilov & Hutter 2019;
    for K-FAC Zhang et al. 2019), every step ends by multiplying each
    trainable weight of rank >= 2 (kernels; biases and batch-norm scales and
    offsets are not decayed) by `1 − weight_decay · s`, `s` the learning
    rate's schedule factor at that step (1 without a decay): the same
    shrinkage per step for every optimizer, whatever the scale of its
    learning rate.
    With `batch_multiple` k, each step takes k consecutive mini-batches of
    the common order at once (a batch of k · `batch_size` examples, the same
    examples in the same order as k steps of the others, but for the end of
    an epoch, where more of the remainder is dropped): larger batches for
    one optimizer, as Martens & Grosse (2015) gave K-FAC; its steps then
    count updates of k batches each.
    """

    kind: str
    learning_rate: float
    damping: float = 0.0
    momentum: float = 0.9
    inv_update_every: int = 10
    cov_ema_decay: float = 0.95
    damping_adaptation_interval: int = 5
    damping_adaptation_decay: float = 0.95
    label: Optional[str] = None
    cov_update_every: int = 1
    spread_inverse_updates: bool = False
    warm_start_covariances: bool = True
    approximation: Optional[str] = None
    max_drift: Optional[float] = None
    norm_constraint: Optional[float] = None
    scheduled_norm_constraint: bool = False
    sub_sample_inputs: bool = False
    sub_sample_patches: bool = False
    min_damping: float = 1e-5
    decay_start: float = 0
    decay_half_life: Optional[float] = None
    decay_clock: str = "steps"
    stats_batch_fraction: Optional[float] = None
    weight_decay: float = 0.0
    batch_multiple: int = 1

    def __post_init__(self):
        if self.kind not in OPTIMIZER_KINDS:
            raise ValueError(
                "kind must be one of {}, got {!r}.".format(OPTIMIZER_KINDS, self.kind)
            )
        for name in ("inv_update_every", "cov_update_every", "batch_multiple"):
            if getattr(self, name) < 1:
                raise ValueError(
                    "{} must be >= 1, got {}.".format(name, getattr(self, name))
                )
        if self.decay_half_life is not None and self.decay_half_life <= 0:
            raise ValueError(
                "decay_half_life must be > 0, got {}.".format(self.decay_half_life)
            )
        if self.decay_start < 0:
            raise ValueError(
                "decay_start must be >= 0, got {}.".format(self.decay_start)
            )
        if self.decay_clock not in DECAY_CLOCKS:
            raise ValueError(
                "decay_clock must be one of {}, got {!r}.".format(
                    DECAY_CLOCKS, self.decay_clock)
            )
        if not 0.0 <= self.weight_decay < 1.0:
            raise ValueError(
                "weight_decay must be in [0, 1), got {}.".format(self.weight_decay)
            )
        if self.scheduled_norm_constraint and (
                self.norm_constraint is None or self.decay_half_life is None):
            raise ValueError(
                "scheduled_norm_constraint needs a norm_constraint and a "
                "learning-rate decay (decay_half_life); got {} and {}.".format(
                    self.norm_constraint, self.decay_half_life)
            )
        if self.stats_batch_fraction is not None:
            if not self.kind.startswith("kfac"):
                raise ValueError(
                    "stats_batch_fraction is a K-FAC setting; {!r} has no "
                    "curvature statistics.".format(self.kind)
                )
            if not 0.0 < self.stats_batch_fraction <= 1.0:
                raise ValueError(
                    "stats_batch_fraction must be in (0, 1], got {}.".format(
                        self.stats_batch_fraction)
                )

    @property
    def name(self) -> str:
        return self.label or self.kind


@dataclasses.dataclass
class TrainingGraph:
    """A graph with one autoencoder and one optimizer's ops.

    `prev_inputs` is a placeholder for the previous training batch (read by
    K-FAC's damping adaptation only; feed the current batch at step 0).
    `cov_update_op` and `inv_update_op` are set only for a K-FAC graph built
    with `periodic=False` (the caller then schedules them); `optimizer` is
    the optimizer that made `train_op`.
    """

    graph: tf.Graph
    model: Any
    prev_inputs: tf.Tensor
    train_op: tf.Operation
    cov_update_op: Optional[tf.Operation] = None
    inv_update_op: Optional[tf.Operation] = None
    optimizer: Any = None


def layer_collection_for(spec: OptimizerSpec) -> Optional[kfac.LayerCollection]:
    """The `LayerCollection` of a K-FAC `spec` (None for SGD and Adam).

    With `warm_start_covariances` its covariances start at zero and are
    zero-debiased: its own configuration, the module constants untouched; with
    `approximation`, that is its default for dense and conv2d layers; the
    sampling switches go into the configuration.
    """
    if not spec.kind.startswith("kfac"):
        return None
    config = kfac.KfacConfig.from_defaults().replace(
        sub_sample_inputs=spec.sub_sample_inputs,
        sub_sample_patches=spec.sub_sample_patches,
    )
    if spec.warm_start_covariances:
        config = config.replace(init_covariances_at_zero=True, zero_debias=True)
    layer_collection = kfac.LayerCollection(config=config)
    if spec.approximation is not None:
        layer_collection.set_default_fully_connected_approximation(spec.approximation)
        layer_collection.set_default_conv2d_approximation(spec.approximation)
    return layer_collection


def schedule_factor(spec: OptimizerSpec, global_step: tf.Tensor):
    """The learning rate's schedule factor `s`: 1, or with `decay_half_life`
    the tensor `0.5^(max(0, t − decay_start) / decay_half_life)`, `t` the
    global step or (`decay_clock="budget"`) the fraction of the time budget
    spent, fed to the placeholder of `budget_spent()`."""
    if spec.decay_half_life is None:
        return 1.0
    if spec.decay_clock == "budget":
        clock = budget_spent()
    else:
        clock = tf.cast(global_step, tf.float32)
    decayed = tf.maximum(clock - float(spec.decay_start), 0.0)
    return tf.pow(0.5, decayed / float(spec.decay_half_life))


def learning_rate_of(spec: OptimizerSpec, global_step: tf.Tensor):
    """`learning_rate · s` (`schedule_factor`): the number
    `spec.learning_rate` without a decay, else a tensor."""
    return spec.learning_rate * schedule_factor(spec, global_step)


def norm_constraint_of(spec: OptimizerSpec, global_step: tf.Tensor):
    """`spec.norm_constraint`, or with `scheduled_norm_constraint` the tensor
    `norm_constraint · s²` (`schedule_factor`): a clipped update
    (`η·κ·p = sqrt(C / pᵀF̂p) · p`) then shrinks by `s` as the learning rate
    does."""
    if not spec.scheduled_norm_constraint:
        return spec.norm_constraint
    return spec.norm_constraint * tf.square(schedule_factor(spec, global_step))


def budget_spent() -> tf.Tensor:
    """The default graph's scalar placeholder for the fraction of the time
    budget spent (0 unless fed), made on first use (`BUDGET_SPENT`)."""
    made = tf.get_collection(BUDGET_SPENT)
    if made:
        return made[0]
    spent = tf.placeholder_with_default(0.0, [], name="budget_spent")
    tf.add_to_collection(BUDGET_SPENT, spent)
    return spent


def _kfac_optimizer(spec: OptimizerSpec, layer_collection, periodic: bool, **kwargs):
    """The K-FAC optimizer of `spec` (keyword arguments of `KfacOptimizer`)."""
    global_step = tf.train.get_or_create_global_step()
    kwargs.update(
        learning_rate=learning_rate_of(spec, global_step),
        cov_ema_decay=spec.cov_ema_decay,
        damping=spec.damping,
        layer_collection=layer_collection,
        norm_constraint=norm_constraint_of(spec, global_step),
    )
    if spec.stats_batch_fraction is not None:
        # The registered pass is not the training loss's, by design: the
        # registration linter would warn that the loss does not use it.
        kwargs.update(lint=None)
    _training.log_registration(layer_collection)
    if not periodic:
        return kfac.KfacOptimizer(**kwargs)
    if spec.max_drift is not None:
        kwargs.update(invert_every="adaptive", max_drift=spec.max_drift,
                      max_every=spec.inv_update_every)
    else:
        kwargs.update(invert_every=spec.inv_update_every)
    return kfac.PeriodicInvCovUpdateKfacOpt(
        cov_update_every=spec.cov_update_every,
        spread_inverse_updates=spec.spread_inverse_updates,
        **kwargs,
    )


def make_train_ops(
    spec: OptimizerSpec,
    model,
    layer_collection,
    prev_inputs,
    batch_size: int,
    periodic: bool = True,
):
    """`(train_op, cov_update_op, inv_update_op, optimizer)`; the middle two
    None unless K-FAC with `periodic=False`. With `spec.weight_decay` the
    training op ends with the decay (`with_weight_decay`)."""
    train_op, *others = _optimizer_ops(
        spec, model, layer_collection, prev_inputs, batch_size, periodic)
    return (with_weight_decay(spec, train_op),) + tuple(others)


def with_weight_decay(spec: OptimizerSpec, train_op: tf.Operation) -> tf.Operation:
    """`train_op`, or with `spec.weight_decay` an op that runs it and then
    multiplies every trainable variable of rank >= 2 by
    `1 − weight_decay · s`, `s` the learning-rate schedule's factor
    (`schedule_factor`) at the step just taken."""
    if not spec.weight_decay:
        return train_op
    weights = [var for var in tf.trainable_variables() if var.shape.ndims >= 2]
    with tf.control_dependencies([train_op]):
        # The training op has counted its step: the one taken is one less.
        step_taken = tf.train.get_global_step().read_value() - 1
        keep = 1.0 - spec.weight_decay * schedule_factor(spec, step_taken)
        decays = [var.assign(var.read_value() * keep) for var in weights]
    return tf.group(*decays, name="train_with_weight_decay")


def _optimizer_ops(spec, model, layer_collection, prev_inputs, batch_size, periodic):
    """`make_train_ops` without the weight decay."""
    global_step = tf.train.get_or_create_global_step()
    if spec.kind in ("sgd", "adam"):
        learning_rate = learning_rate_of(spec, global_step)
        if spec.kind == "sgd":
            optimizer = tf.train.MomentumOptimizer(learning_rate, spec.momentum)
        else:
            optimizer = tf.train.AdamOptimizer(learning_rate)
        train_op = optimizer.minimize(model.loss, global_step=global_step)
        return train_op, None, None, optimizer
    if spec.kind == "kfac":
        optimizer = _kfac_optimizer(
            spec,
            layer_collection,
            periodic,
            momentum=spec.momentum,
            momentum_type="regular",
        )
    else:
        # The quadratic model picks the step size and momentum (M&G §7);
        # the learning rate scales its step (1.0 = as chosen).
        optimizer = _kfac_optimizer(
            spec,
            layer_collection,
            periodic,
            momentum=0.0,
            momentum_type="qmodel",
            batch_size=batch_size,
        )
        optimizer.set_damping_adaptation_params(
            is_chief=True,
            prev_train_batch=prev_inputs,
            loss_fn=model.loss_fn,
            min_damping=spec.min_damping,
            damping_adaptation_decay=spec.damping_adaptation_decay,
            damping_adaptation_interval=spec.damping_adaptation_interval,
        )
    if periodic:
        train_op = optimizer.minimize(model.loss, global_step=global_step)
        return train_op, None, None, optimizer
    _, cov_update_op, _, inv_update_op, _, _ = optimizer.make_ops_and_vars()
    train_op = optimizer.minimize(model.loss, global_step=global_step)
    return train_op, cov_update_op, inv_update_op, optimizer


def build_training_graph(
    spec: OptimizerSpec,
    settings,
    input_size: int,
    build_model: Callable,
    periodic: bool = True,
) -> TrainingGraph:
    """A new graph with `spec`'s training ops for the model `build_model` makes.

    The graph's random seed is `settings.seed`; `build_model(inputs,
    layer_collection)` gets the float32 `[None, input_size]` input
    placeholder and `spec`'s collection (None for SGD and Adam), and returns
    the model (`inputs`, `loss`, `loss_fn`). `periodic` as `make_train_ops`.
    With `spec.stats_batch_fraction` it is called twice: on `inputs` without
    a collection (the model returned), then, reusing the variables (made with
    `tf.get_variable`), on the statistics batch with the collection; the
    quadratic model then normalises its Fisher products by that batch's size.
    """
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(settings.seed)
        inputs = tf.placeholder(tf.float32, [None, input_size], name="inputs")
        prev_inputs = tf.placeholder(tf.float32, [None, input_size], name="prev_inputs")
        layer_collection = layer_collection_for(spec)
        stats_size = stats_batch_size(spec, settings.batch_size)
        if spec.stats_batch_fraction is None:
            model = build_model(inputs, layer_collection)
        else:
            model = build_model(inputs, None)
            _register_on_stats_batch(build_model, inputs, layer_collection, stats_size)
        ops = make_train_ops(
            spec, model, layer_collection, prev_inputs, stats_size, periodic
        )
    return TrainingGraph(graph, model, prev_inputs, *ops)


def stats_batch_size(spec: OptimizerSpec, batch_size: int) -> int:
    """How many examples of a `batch_size` batch `spec`'s curvature statistics
    see: `ceil(stats_batch_fraction · batch_size)` (all without a fraction)."""
    if spec.stats_batch_fraction is None:
        return batch_size
    return max(1, int(math.ceil(spec.stats_batch_fraction * batch_size - 1e-9)))


def _register_on_stats_batch(build_model: Callable, inputs, layer_collection,
                             size: int):
    """Builds the model a second time, on the first `size` rows of `inputs`,
    reusing the variables of the first build, and registers that pass with
    `layer_collection`: the statistics batch of `stats_batch_fraction`.
    (`tf.AUTO_REUSE`, not `reuse=True`: under the latter each registration
    would look for a block to add to, as a registration in a reused scope
    does.)"""
    with tf.variable_scope(tf.get_variable_scope(), reuse=tf.AUTO_REUSE):
        with tf.name_scope("stats_batch"):
            build_model(inputs[:size], layer_collection)


class Trainer:
    """Runs one optimizer step: `step(step_index, batch, prev_batch)` → batch loss.

    Session callables are made up front (see `warm_up`), so set-up costs
    stay off the clock. A periodic K-FAC training op schedules its own
    covariance and inverse updates. For a graph with separate ops
    (`periodic=False`) every step updates the covariances and every
    `inv_update_every` steps (from step 0) the inverses are refreshed first.
    """

    def __init__(self, sess: tf.Session, spec: OptimizerSpec, ops: TrainingGraph):
        # With a decay on the budget's clock, every run also feeds the
        # fraction of the budget spent (`step`'s `budget_spent`).
        budget = ops.graph.get_collection(BUDGET_SPENT)
        self._feeds_budget = bool(budget)
        feeds = [ops.model.inputs, ops.prev_inputs] + budget
        self._inv_update_every = spec.inv_update_every
        self._train = sess.make_callable([ops.model.loss, ops.train_op], feeds)
        self._inv = None
        # One run of the periodic op goes through every branch of its schedule
        # within a cycle of inverse updates.
        self._warm_up_steps = spec.inv_update_every if spec.kind != "sgd" else 1
        if ops.cov_update_op is not None:
            # One run for the step and the covariance update shares the
            # forward pass.
            self._train_and_cov = sess.make_callable(
                [ops.model.loss, ops.train_op, ops.cov_update_op], feeds
            )
            self._cov = sess.make_callable(ops.cov_update_op, feeds)
            self._inv = sess.make_callable(ops.inv_update_op)

    def step(self, step: int, batch: np.ndarray, prev_batch: np.ndarray,
             budget_spent: float = 0.0) -> float:
        """Trains on `batch`; returns its loss. `budget_spent`: the fraction of
        the time budget spent so far (read only by a decay on that clock)."""
        feeds = self._feed_values(batch, prev_batch, budget_spent)
        if self._inv is None:
            return float(self._train(*feeds)[0])
        if step % self._inv_update_every == 0:
            # Fold this batch into the covariances and invert before the
            # step, so that it uses fresh inverses.
            self._cov(*feeds)
            self._inv()
            return float(self._train(*feeds)[0])
        return float(self._train_and_cov(*feeds)[0])

    def _feed_values(self, batch, prev_batch, budget_spent):
        """The values of the callables' feeds, in their order."""
        return (batch, prev_batch) + ((budget_spent,) if self._feeds_budget else ())

    def warm_up(self, batch: np.ndarray):
        """Runs every callable (TensorFlow finishes setting them up on first use).

        This changes the variables: re-run their initializer afterwards.
        """
        feeds = self._feed_values(batch, batch, 0.0)
        for _ in range(self._warm_up_steps):
            self._train(*feeds)
        if self._inv is not None:
            self._train_and_cov(*feeds)
            self._cov(*feeds)
            self._inv()


def train_one(
    build_graph: Callable[..., TrainingGraph],
    spec: OptimizerSpec,
    settings,
    train_images: np.ndarray,
    eval_images: np.ndarray,
    progress: Optional[comparison.Progress] = None,
    logdir: Optional[str] = None,
    after_training: Optional[Callable[[tf.Session], None]] = None,
    budgets: Sequence[float] = (),
    at_budget: Optional[Callable[[tf.Session], Dict]] = None,
) -> Dict:
    """Trains `spec` on `build_graph(spec, settings, input_size)`; returns its record.

    Every spec starts from the model's fixed initial weights and sees the
    mini-batches `comparison.minibatch_indices(..., settings.seed + 1)`.

    The record holds `name`, `config` (the spec and settings), `evals` (a
    list of `{"step", "seconds", "loss"}`: evaluation-subset loss after `step`
    updates and `seconds` of training), `steps`, `seconds`, `final_loss` and
    `diverged` (the batch loss became NaN/inf; the run stopped there); a
    K-FAC run also `health` (`_health_plot`: damping and condition numbers at
    every evaluation). Training stops after `max_steps` steps or once
    `max_seconds` have passed. With `logdir`, the evaluation losses (and
    K-FAC's summaries) go to TensorBoard events in `<logdir>/<spec name>`.
    Evaluations, health and logs are off the clock. `after_training(sess)`
    runs once training has stopped, in the run's session (e.g. test metrics).
    With `budgets` (seconds, increasing) and `at_budget(sess)` (a dict of
    metrics), the record's `budgets` holds `{"budget", "step", "seconds",
    **metrics}` taken after the first step that ends at or past each budget
    (off the clock); budgets the run did not reach are left out. With
    `spec.batch_multiple` k, `settings.batch_size` is k times the given one
    (recorded so in `config`).
    """
    if spec.batch_multiple != 1:
        settings = dataclasses.replace(
            settings, batch_size=settings.batch_size * spec.batch_multiple)
    record = {
        "name": spec.name,
        "config": {
            "optimizer": dataclasses.asdict(spec),
            "settings": dataclasses.asdict(settings),
        },
        "evals": [],
        "diverged": False,
    }
    budget_decay = spec.decay_half_life is not None and spec.decay_clock == "budget"
    if budget_decay and settings.max_seconds is None:
        raise ValueError(
            "{}: a learning-rate decay on the budget's clock needs max_seconds."
            .format(spec.name)
        )
    ops = build_graph(spec, settings, train_images.shape[1])
    is_kfac = isinstance(ops.optimizer, kfac.KfacOptimizer)
    with ops.graph.as_default(), tf.Session(graph=ops.graph) as sess:
        health = _health_plot.health_tensors(ops.optimizer) if is_kfac else None
        if health is not None:
            record["health"] = []
        log = None
        if logdir is not None:
            log = _tensorboard.TrainingLog(
                os.path.join(logdir, spec.name), ops.optimizer if is_kfac else None,
                summary_every=settings.eval_every,
            )
        initialize = tf.global_variables_initializer()
        sess.run(initialize)
        trainer = Trainer(sess, spec, ops)
        run_loss = sess.make_callable(ops.model.loss, [ops.model.inputs])
        # Keep one-off set-up costs off the clock, then start from scratch.
        trainer.warm_up(train_images[: settings.batch_size])
        # No op may be added from here on: a step that grew the graph would
        # slow every later step (and fail here instead).
        ops.graph.finalize()
        sess.run(initialize)

        def log_eval(step, seconds):
            loss = comparison.evaluate_loss(run_loss, eval_images)
            record["evals"].append(
                {
                    "step": step,
                    "seconds": seconds,
                    "loss": comparison.finite_or_none(loss),
                }
            )
            if health is not None:
                values = sess.run(health)
                record["health"].append(
                    {
                        "step": step,
                        **{
                            name: comparison.finite_or_none(float(value))
                            for name, value in values.items()
                        },
                    }
                )
            if log is not None:
                log.write(step, {"eval_loss": loss, "seconds": seconds}, sess.run)
            if progress is not None:
                progress.update(spec.name, step, seconds, loss)

        batches = comparison.minibatch_indices(
            len(train_images), settings.batch_size, settings.seed + 1
        )
        seconds, step, prev_batch = 0.0, 0, None
        pending_budgets = list(budgets) if at_budget is not None else []
        if pending_budgets:
            record["budgets"] = []
        log_eval(step, seconds)
        while (settings.max_steps is None or step < settings.max_steps) and (
            settings.max_seconds is None or seconds < settings.max_seconds
        ):
            start = time.perf_counter()
            batch = train_images[next(batches)]
            batch_loss = trainer.step(
                step,
                batch,
                batch if prev_batch is None else prev_batch,
                budget_spent=seconds / settings.max_seconds
                if settings.max_seconds
                else 0.0,
            )
            seconds += time.perf_counter() - start
            step, prev_batch = step + 1, batch
            if not math.isfinite(batch_loss):
                record["diverged"] = True
                break
            if step % settings.eval_every == 0:
                log_eval(step, seconds)
            while pending_budgets and seconds >= pending_budgets[0]:
                record["budgets"].append(
                    {
                        "budget": pending_budgets.pop(0),
                        "step": step,
                        "seconds": seconds,
                        **at_budget(sess),
                    }
                )
        if record["evals"][-1]["step"] != step:
            log_eval(step, seconds)
        if after_training is not None:
            after_training(sess)
    record.update(steps=step, seconds=seconds, final_loss=record["evals"][-1]["loss"])
    if log is not None:
        log.close()
    if progress is not None:
        progress.finish()
    return record


def new_record(settings, data: str, eval_images: np.ndarray, **extra) -> Dict:
    """The record of a comparison before its runs: `settings` (as a dict),
    the `extra` fields, `data`, `eval_size`, `environment` and empty `runs`."""
    return {
        "settings": dataclasses.asdict(settings),
        **extra,
        "data": data,
        "eval_size": len(eval_images),
        "environment": comparison.environment(),
        "runs": [],
    }


def train_all(
    train: Callable[..., Dict],
    specs: Sequence[OptimizerSpec],
    settings_of: Callable[[OptimizerSpec], Any],
    train_images: np.ndarray,
    eval_images: np.ndarray,
    result: Dict,
    record_path: str,
    progress: Optional[comparison.Progress] = None,
) -> None:
    """Appends `train(spec, settings_of(spec), train_images, eval_images,
    progress)` to `result["runs"]` for every spec, rewriting the JSON file
    `record_path` after each run (an interrupted comparison keeps its runs)."""
    for spec in specs:
        result["runs"].append(
            train(spec, settings_of(spec), train_images, eval_images, progress)
        )
        comparison.write_json(record_path, result)


def add_reference_target(result: Dict, record_path: str) -> None:
    """Adds `target` (the best loss of the run named `comparison.REFERENCE`)
    and `table` (`comparison.target_table` rows) to `result` and rewrites
    `record_path`; nothing when that run is missing or has no finite loss."""
    reference = [run for run in result["runs"] if run["name"] == comparison.REFERENCE]
    if reference and math.isfinite(comparison.best_loss(reference[0])):
        result["target"] = comparison.best_loss(reference[0])
        result["table"] = comparison.target_table(result["runs"], result["target"])
        comparison.write_json(record_path, result)
