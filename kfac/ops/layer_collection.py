"""Registry of layers, their Fisher blocks, shared factors and losses (API.md §6).

A `LayerCollection` records, for one estimator/optimizer:
* which parameters form a layer and how its Fisher block is approximated
  (`register_fully_connected`, `register_conv2d`, ...; one call per tower),
* the predictive distributions whose Fisher is estimated (loss registrations),
* the factors built by the blocks, cached by `(class, args)` so that blocks
  reading the same tensors share statistics (`make_or_get_factor`).
Registration creates no variables; the estimator builds everything later.
"""

import collections
import contextlib

import tensorflow.compat.v1 as tf

from kfac.ops import _config
from kfac.ops._factors.cache import FactorCache
from kfac.ops._registration import conv2d
from kfac.ops._registration import convolution
from kfac.ops._registration import depthwise
from kfac.ops._registration import embedding
from kfac.ops._registration import fully_connected
from kfac.ops._registration import generic
from kfac.ops._registration import losses as loss_registration
from kfac.ops._registration import records
from kfac.ops._registration import scale_and_shift
from kfac.ops._registration.automatic import AutomaticRegistration
from kfac.ops._registration.checking import RegistrationChecks
from kfac.ops._registration.common import APPROX_DIAGONAL_NAME  # noqa: F401
from kfac.ops._registration.common import APPROX_EKFAC_NAME  # noqa: F401
from kfac.ops._registration.common import APPROX_FULL_NAME  # noqa: F401
from kfac.ops._registration.common import APPROX_KRONECKER_INDEP_NAME  # noqa: F401
from kfac.ops._registration.common import APPROX_KRONECKER_NAME  # noqa: F401
from kfac.ops._registration.common import APPROX_KRONECKER_SERIES_1_NAME  # noqa: F401
from kfac.ops._registration.common import APPROX_KRONECKER_SERIES_2_NAME  # noqa: F401
from kfac.ops._registration.common import VARIABLE_SCOPE
from kfac.ops._registration.common import block_type_for
from kfac.ops._registration.keys import check_linkable
from kfac.ops._registration.keys import insert_block
from kfac.ops._registration.kinds import LAYER_KINDS
from kfac.ops._registration.parameters_dict import LayerParametersDict
from kfac.ops._registration.shapes import RegistrationWarning  # noqa: F401
from kfac.ops._utils.containers import ensure_sequence

_DEFAULT_LAYER_COLLECTION = None


def get_default_layer_collection() -> "LayerCollection":
    """The collection installed by `set_default_layer_collection`/`as_default`.

    Raises:
      ValueError: if no default collection is set.
    """
    if _DEFAULT_LAYER_COLLECTION is None:
        raise ValueError(
            "Attempted to retrieve default LayerCollection when none is set. Use "
            "LayerCollection.as_default()."
        )
    return _DEFAULT_LAYER_COLLECTION


def set_default_layer_collection(layer_collection) -> None:
    """Installs `layer_collection` as the default; None clears it.

    Raises:
      ValueError: if a default is already set and `layer_collection` is not None.
    """
    global _DEFAULT_LAYER_COLLECTION
    if _DEFAULT_LAYER_COLLECTION is not None and layer_collection is not None:
        raise ValueError("Default LayerCollection is already set.")
    _DEFAULT_LAYER_COLLECTION = layer_collection


def _default_approximation(layer_kind: str) -> property:
    """The read-only property `default_<layer_kind>_approximation`."""
    attribute = "_default_{}_approximation".format(layer_kind)
    return property(
        lambda self: getattr(self, attribute),
        doc="The approximation of {} layers registered without one.".format(
            layer_kind.replace("_", " ")
        ),
    )


def _evaluate_for_empirical_fisher(loss):
    evaluate = getattr(loss, "evaluate_for_empirical_fisher", loss.evaluate)
    return evaluate()


class LayerCollection(RegistrationChecks, AutomaticRegistration):
    """Registry of layers (Fisher blocks), factors and losses for one estimator.

    Attributes:
      fisher_blocks: `LayerParametersDict` {params key -> FisherBlock}, in
        registration order (which fixes the order of factors and update ops).
      fisher_factors: OrderedDict {(factor class, args) -> FisherFactor}.
      loss_colocation_ops: {loss -> tensor its evaluation is colocated with}.

    Each layer `register_*` method is defined in the module of its kind
    (`kfac/ops/_registration/<kind>.py`), which checks the arguments, builds
    the block and registers it through this class's public methods; so are
    the `register_*_predictive_distribution` methods, in
    `_registration/losses.py`. The checks against the graph
    (`check_registration`, the linter, `summary`) and
    `auto_register_layers`/`finalize` come from the mixins
    `_registration.checking.RegistrationChecks` and
    `_registration.automatic.AutomaticRegistration`.
    """

    register_fully_connected = fully_connected.register_fully_connected
    register_fully_connected_multi = fully_connected.register_fully_connected_multi
    register_conv2d = conv2d.register_conv2d
    register_conv2d_multi = conv2d.register_conv2d_multi
    register_convolution = convolution.register_convolution
    register_depthwise_conv2d = depthwise.register_depthwise_conv2d
    register_separable_conv2d = depthwise.register_separable_conv2d
    register_embedding = embedding.register_embedding
    register_embedding_multi = embedding.register_embedding_multi
    register_generic = generic.register_generic
    register_scale_and_shift = scale_and_shift.register_scale_and_shift
    register_categorical_predictive_distribution = (
        loss_registration.register_categorical_predictive_distribution
    )
    register_normal_predictive_distribution = (
        loss_registration.register_normal_predictive_distribution
    )
    register_multi_bernoulli_predictive_distribution = (
        loss_registration.register_multi_bernoulli_predictive_distribution
    )

    def __init__(self, graph=None, name: str = "LayerCollection", config=None):
        """Makes an empty collection.

        Args:
          graph: the graph of the model (default: the default graph).
          name: default name of the variable scope its factors live under.
          config: (port addition) the `KfacConfig` its factors and blocks use;
            None takes the module constants' current values
            (`KfacConfig.from_defaults()`): changing a constant later does not
            affect this collection.
        """
        if config is None:
            config = _config.KfacConfig.from_defaults()
        elif not isinstance(config, _config.KfacConfig):
            raise TypeError(
                "LayerCollection: config must be a KfacConfig, got %r." % (config,)
            )
        self.fisher_blocks = LayerParametersDict()
        self.loss_colocation_ops = {}
        self._graph = graph if graph is not None else tf.get_default_graph()
        self._loss_dict = collections.OrderedDict()  # name -> [loss per tower]
        self._linked_parameters = {}  # frozenset(vars) -> approximation or None
        self._subgraph = None
        self._vars_to_uses = collections.defaultdict(int)
        self._layer_registrations = LayerParametersDict()
        for kind in LAYER_KINDS.values():
            setattr(self, "_default_{}_approximation".format(kind.name), kind.default)
        # Reserve a unique scope name ("LayerCollection", "LayerCollection_1", ...)
        # under which factors are constructed.
        with self._graph.as_default():
            with tf.variable_scope(None, default_name=name) as scope:
                self._var_scope = scope.name
        self._factor_cache = FactorCache(self._graph, self._var_scope, config)
        self.fisher_factors = self._factor_cache.factors

    # --------------------------------------------------------------------
    # Read-only views.

    @property
    def losses(self) -> list:
        """All registered loss objects, by name then tower."""
        return [loss for towers in self._loss_dict.values() for loss in towers]

    @property
    def towers_by_loss(self) -> tuple:
        """Tuple over loss names of tuples over towers."""
        return tuple(tuple(towers) for towers in self._loss_dict.values())

    @property
    def registered_variables(self) -> tuple:
        """Every variable appearing in a block key, in registration order."""
        return tuple(var for key in self.fisher_blocks for var in ensure_sequence(key))

    @property
    def linked_parameters(self) -> dict:
        """{frozenset of variables -> approximation name or None}."""
        return self._linked_parameters

    @property
    def graph(self):
        return self._graph

    @property
    def subgraph(self):
        """The `utils.SubGraph` of the loss inputs (None until `create_subgraph`)."""
        return self._subgraph

    def get_blocks(self):
        return self.fisher_blocks.values()

    def get_factors(self):
        return self.fisher_factors.values()

    # --------------------------------------------------------------------
    # Default approximations.

    default_generic_approximation = _default_approximation("generic")
    default_embedding_approximation = _default_approximation("embedding")
    default_fully_connected_approximation = _default_approximation("fully_connected")
    default_conv2d_approximation = _default_approximation("conv2d")
    default_fully_connected_multi_approximation = _default_approximation(
        "fully_connected_multi"
    )
    default_conv2d_multi_approximation = _default_approximation("conv2d_multi")
    default_embedding_multi_approximation = _default_approximation("embedding_multi")
    default_scale_and_shift_approximation = _default_approximation("scale_and_shift")

    def _set_default_approximation(self, layer_kind: str, value: str) -> None:
        LAYER_KINDS[layer_kind].check_approximation(value)
        setattr(self, "_default_{}_approximation".format(layer_kind), value)

    def set_default_generic_approximation(self, value: str) -> None:
        """ "full" or "diagonal" (ValueError otherwise)."""
        self._set_default_approximation("generic", value)

    def set_default_embedding_approximation(self, value: str) -> None:
        """Only "kron" is accepted (ValueError otherwise)."""
        self._set_default_approximation("embedding", value)

    def set_default_fully_connected_approximation(self, value: str) -> None:
        """ "kron" or "diagonal" (ValueError otherwise)."""
        self._set_default_approximation("fully_connected", value)

    def set_default_conv2d_approximation(self, value: str) -> None:
        """ "kron" or "diagonal" (ValueError otherwise)."""
        self._set_default_approximation("conv2d", value)

    def set_default_fully_connected_multi_approximation(self, value: str) -> None:
        """ "kron_indep", "kron_series_1" or "kron_series_2" (ValueError otherwise)."""
        self._set_default_approximation("fully_connected_multi", value)

    def set_default_scale_and_shift_approximation(self, value: str) -> None:
        """(Port addition) "full" or "diagonal" (ValueError otherwise)."""
        self._set_default_approximation("scale_and_shift", value)

    # --------------------------------------------------------------------
    # Blocks, factors and linked parameters.

    def register_block(self, layer_key, fisher_block, reuse=VARIABLE_SCOPE):
        """Inserts `fisher_block` under `layer_key`; returns the block in effect.

        Args:
          layer_key: a variable (or tensor) or a tuple/list of them.
          fisher_block: the new block (any object; its type is compared on reuse).
          reuse: True to add a tower to the existing block, False to require a new
            key, `tf.AUTO_REUSE` for "reuse if present", or `VARIABLE_SCOPE` to
            take the current variable scope's reuse flag.

        Returns:
          The existing block when reusing, else `fisher_block`.

        Raises:
          KeyError: reuse requested but no block is registered under `layer_key`.
          ValueError: reuse with a block of another type; the key is "already in
            LayerCollection" without reuse; or one of its variables "was already
            registered" under another key; or the collection is finalized.
        """
        self._check_not_finalized("register a layer")
        return insert_block(self.fisher_blocks, layer_key, fisher_block, reuse)

    def record_layer(self, params, kind, approximation, tower_args, uses, block):
        """(Port addition) notes one tower of a `register_*` call (see
        `layer_registrations`); the registration functions call it."""
        records.record_tower(
            self._layer_registrations, kind, approximation, params, tower_args, uses,
            block,
        )

    @property
    def layer_registrations(self) -> LayerParametersDict:
        """(Port addition) {params key -> `LayerRegistration`} in registration
        order: kind, approximation, per-tower arguments, uses, block."""
        return self._layer_registrations

    def make_or_get_factor(self, cls, args):
        """The factor `cls(*args)`, built once (in this collection's scope) and cached.

        Tensors compare by identity, so blocks fed the same tensors share factors.

        Raises:
          TypeError: if `args` cannot be hashed.
        """
        return self._factor_cache.make_or_get_factor(cls, args)

    @property
    def factor_cache(self) -> FactorCache:
        """What the blocks build their factors with (they see nothing else)."""
        return self._factor_cache

    @property
    def config(self) -> "_config.KfacConfig":
        """The `KfacConfig` of this collection's factors and blocks."""
        return self._factor_cache.config

    def define_linked_parameters(self, params, approximation=None) -> None:
        """Declares `params` a group, optionally with the approximation to use.

        A layer later registered with exactly this group and no explicit `approx`
        uses `approximation`.

        Raises:
          ValueError: if a variable of the group is registered under a different
            key, or already belongs to a linked group.
        """
        self._check_not_finalized("link parameters")
        group = check_linkable(self.fisher_blocks, self._linked_parameters, params)
        self._linked_parameters[group] = approximation

    def _get_linked_approx(self, params):
        """The approximation linked to exactly this group of params, else None."""
        return self._linked_parameters.get(frozenset(ensure_sequence(params)))

    def _get_block_type(self, params, approx, default, approx_to_type):
        """`(block class, approx)`: explicit approx, then linked one, then default.

        Raises:
          ValueError: ("Bad value ... for approx") if not in `approx_to_type`.
        """
        approx = self._approximation_or(params, approx, default)
        return block_type_for(approx, approx_to_type), approx

    def _approximation_or(self, params, approx, default):
        """`approx`, else the one linked to exactly `params`, else `default`."""
        if approx is None:
            approx = self._get_linked_approx(params)
            if approx is None:
                approx = default
        return approx

    def resolve_approximation(self, layer_kind: str, params, approx=None) -> str:
        """(Port addition) the approximation a registration of `params` uses.

        Explicit `approx`, else the one linked to exactly `params`
        (`define_linked_parameters`), else this collection's default for
        `layer_kind` ("fully_connected", "conv2d_multi", ...); not checked.
        """
        default = getattr(self, "default_{}_approximation".format(layer_kind))
        return self._approximation_or(params, approx, default)

    def _get_use_count_map(self):
        """{variable -> number of registered uses} (inf for generic layers)."""
        return self._vars_to_uses

    def add_uses(self, params, uses) -> None:
        """(Port addition) adds `uses` registered uses to every variable of `params`.

        `check_registration` compares these counts with the graph.
        """
        for var in ensure_sequence(params):
            self._vars_to_uses[var] += uses

    _add_uses = add_uses  # the original's name

    # --------------------------------------------------------------------
    # Losses.

    def register_loss_function(
        self, loss, colocation_op, base_name, name=None, reuse=VARIABLE_SCOPE
    ) -> None:
        """Registers `loss` as a new loss, or as another tower of loss `name`.

        Args:
          loss: a `loss_functions.LossFunction`.
          colocation_op: tensor its evaluation is colocated with.
          base_name: base of the generated name when `name` is None.
          name: the loss name; towers of one loss share it.
          reuse: truthy: append a tower to the existing loss `name`; falsy: start
            a new loss; `tf.AUTO_REUSE`: append if `name` exists, else start it
            (the original treated AUTO_REUSE as True); `VARIABLE_SCOPE`: the
            current variable scope's reuse flag.

        Raises:
          KeyError: reuse without an existing loss `name`, or a new loss whose
            `name` is taken.
        """
        self._check_not_finalized("register a loss")
        name = name or self._graph.unique_name(base_name)
        loss_registration.add_loss_tower(self._loss_dict, name, loss, reuse)
        self.loss_colocation_ops[loss] = colocation_op

    def loss_colocation(self, loss):
        """(Port addition) a context placing new ops next to `loss`'s input.

        That is `loss_colocation_ops[loss]`; no placement if it has none.
        """
        colocation_op = self.loss_colocation_ops.get(loss)
        if colocation_op is None:
            return contextlib.nullcontext()
        # Graph.colocate_with: `tf.colocate_with` is a deprecated alias of it.
        return tf.get_default_graph().colocate_with(colocation_op)

    _loss_colocation = loss_colocation  # the name the estimator used

    def _colocated_evaluations(self, evaluate) -> list:
        evaluations = []
        for loss in self.losses:
            with self.loss_colocation(loss):
                evaluations.append(evaluate(loss))
        return evaluations

    def eval_losses(self) -> list:
        """`loss.evaluate()` (data targets) of every loss, colocated with its input."""
        return self._colocated_evaluations(lambda loss: loss.evaluate())

    def eval_losses_on_samples(self) -> list:
        """`loss.evaluate_on_sample()` of every loss (targets sampled by the model)."""
        return self._colocated_evaluations(lambda loss: loss.evaluate_on_sample())

    def eval_losses_for_empirical_fisher(self) -> list:
        """(Port addition) `loss.evaluate_for_empirical_fisher()` of every loss.

        Data targets, weighted by `√v` (see `loss_functions`); the same as
        `eval_losses()` for unweighted losses, and for losses without that
        method.
        """
        return self._colocated_evaluations(_evaluate_for_empirical_fisher)

    def total_loss(self):
        """Sum of all losses evaluated on their data targets."""
        return tf.add_n(self.eval_losses())

    def total_sampled_loss(self):
        """Sum of all losses evaluated on targets sampled from the model."""
        return tf.add_n(self.eval_losses_on_samples())

    @property
    def losses_by_name(self):
        """(Port addition) {loss name -> list of its towers' loss objects}."""
        return self._loss_dict

    @contextlib.contextmanager
    def as_default(self):
        """Sets this collection as the default for the duration of the block."""
        set_default_layer_collection(self)
        try:
            yield self
        finally:
            set_default_layer_collection(None)
