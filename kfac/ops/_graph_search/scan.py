"""`register_layers`: register every trainable variable the losses depend on.

1. Find the uses of each unregistered variable among the ancestors of the
   registered losses' inputs (`graph.LossGraph`).
2. Match each use to a layer (`layers`, `normalization`); a match claims the
   uses of its weights and of the bias/shift it found. Shifts alone are
   matched last, among the uses still unclaimed.
3. Group the matches by their parameters. A variable in two different groups
   (a bias after two layers, weights with a bias in one place and without in
   another) is ambiguous: `AmbiguousRegistrationError`. A group whose uses
   are of one kind with one set of options is registered, once per tower,
   with the `*_multi` form when used several times per tower; any other group
   (uses of different kinds, an unmatched use, several uses of a kind without
   a multi-use block, uses not split evenly over the towers, arguments the
   registration rejects) falls back to a generic block, with a warning naming
   each variable and why.
"""

import collections
import dataclasses
import logging
from typing import List

import tensorflow.compat.v1 as tf

from kfac.ops._graph_search.graph import LossGraph
from kfac.ops._graph_search.layers import LAYER_MATCHERS
from kfac.ops._graph_search.normalization import match_fused_batch_norm
from kfac.ops._graph_search.normalization import match_scale
from kfac.ops._graph_search.normalization import match_shift
from kfac.ops._graph_search.towers import Towers

LOGGER = logging.getLogger("kfac.auto_register")

_PRIMARY_MATCHERS = LAYER_MATCHERS + (match_fused_batch_norm, match_scale)
# Fallback approximation: "full" would be a square matrix over every entry.
FALLBACK_APPROXIMATION = "diagonal"


class AmbiguousRegistrationError(ValueError):
    """A variable matches several incompatible layer patterns."""


@dataclasses.dataclass(eq=False)
class Registration:
    """What `register_layers` did with one group of parameters.

    Attributes:
      params: the registered `params` argument.
      kind: the layer kind registered ("generic" for a fallback).
      patterns: the matched patterns, one per use (empty for a fallback).
      uses_per_tower: uses per tower.
      num_towers: towers registered.
      reason: why it fell back to a generic block (None otherwise).
    """

    params: object
    kind: str
    patterns: List[str]
    uses_per_tower: int
    num_towers: int
    reason: str = None


def _name(var) -> str:
    return var.op.name


def _loss_inputs(layer_collection) -> list:
    return tf.nest.flatten([loss.inputs for loss in layer_collection.losses])


def _match_all(loss_graph: LossGraph, variables):
    """`(matches in use order, {variable: unclaimed uses})`."""
    claimed = set()  # (op, input index) of every claimed use
    matches = []

    def claim(match):
        matches.append(match)
        claimed.update((use.op, use.index) for use in match.claims)

    for matchers in (_PRIMARY_MATCHERS, (match_shift,)):
        for var in variables:
            for use in loss_graph.uses[var]:
                if (use.op, use.index) in claimed:
                    continue
                for matcher in matchers:
                    match = matcher(loss_graph, use)
                    if match is not None and not any(
                        (c.op, c.index) in claimed for c in match.claims
                    ):
                        claim(match)
                        break
    matches.sort(key=lambda m: loss_graph.order(m.claims[0].op))
    unclaimed = {
        var: [u for u in loss_graph.uses[var] if (u.op, u.index) not in claimed]
        for var in variables
    }
    return matches, unclaimed


def _describe_match(match) -> str:
    return "{} {} ({} at op {!r})".format(
        match.kind,
        "(" + ", ".join(_name(v) for v in match.variables) + ")",
        match.pattern,
        match.claims[0].op.name,
    )


def _groups(matches, variables):
    """Matches grouped by their variables, in order; raises on ambiguity."""
    groups = collections.OrderedDict()  # tuple of variables -> [match]
    group_of = {}
    for match in matches:
        key = match.variables
        groups.setdefault(key, []).append(match)
        for var in key:
            group_of.setdefault(var, collections.OrderedDict())[key] = match
    for var in variables:
        candidates = group_of.get(var, {})
        if len(candidates) > 1:
            raise AmbiguousRegistrationError(
                "auto_register_layers: variable {} matches several incompatible "
                "layer patterns: {}. Register it by hand before calling "
                "auto_register_layers (the scan skips registered variables).".format(
                    _name(var),
                    "; ".join(_describe_match(m) for m in candidates.values()),
                )
            )
    return groups


class _Registrar(object):
    """Registers the groups with the collection, towers and fallbacks."""

    def __init__(self, layer_collection, towers: Towers, batch_size):
        self._collection = layer_collection
        self._towers = towers
        self._batch_size = batch_size
        self.registrations: List[Registration] = []

    def batch_size(self, tower: int):
        if self._batch_size is not None:
            return self._batch_size
        first = self._towers.loss_inputs[tower][0]
        size = tf.compat.dimension_value(first.shape[0]) if first.shape.rank else None
        return size if size is not None else tf.shape(first)[0]

    def fallback(self, variables, reason) -> None:
        params = variables[0] if len(variables) == 1 else tuple(variables)
        linked = frozenset(variables) in self._collection.linked_parameters
        approx = None if linked else FALLBACK_APPROXIMATION
        towers = self._towers.num_towers
        for tower in range(towers):
            self._collection.register_generic(
                params, self.batch_size(tower), approx=approx, reuse=tower > 0
            )
        self.registrations.append(
            Registration(params, "generic", [], 0, towers, reason)
        )
        LOGGER.warning(
            "auto_register_layers: %s registered as a generic (%s) block: %s",
            ", ".join(_name(v) for v in variables),
            approx or "linked",
            reason,
        )

    def register(self, variables, matches, unclaimed) -> None:
        names = ", ".join(_name(v) for v in variables)
        leftovers = [use for var in variables for use in unclaimed.get(var, [])]
        if leftovers:
            return self.fallback(
                variables,
                "no layer pattern matches its use as "
                + "; ".join(use.describe() for use in leftovers),
            )
        if len({m.signature for m in matches}) != 1:
            return self.fallback(
                variables,
                "its uses are different layers: "
                + "; ".join(_describe_match(m) for m in matches),
            )
        per_tower = self._towers.split(matches)
        if per_tower is None:
            return self.fallback(
                variables,
                "its {} uses do not split evenly over the {} towers".format(
                    len(matches), self._towers.num_towers
                ),
            )
        uses = len(per_tower[0])
        method = _registration_method(matches[0].kind, uses)
        if method is None:
            return self.fallback(
                variables,
                "it is a {} layer used {} times per example, and that kind has no "
                "multi-use block".format(matches[0].kind, uses),
            )
        for tower, tower_matches in enumerate(per_tower):
            try:
                method(self._collection, tower_matches, reuse=tower > 0)
            except ValueError as error:
                if tower > 0:
                    raise
                return self.fallback(
                    variables, "the registration rejected it: {}".format(error)
                )
        self.registrations.append(
            Registration(
                matches[0].registration_params,
                matches[0].kind,
                [m.pattern for m in matches],
                uses,
                len(per_tower),
            )
        )
        LOGGER.info(
            "auto_register_layers: %s registered as %s (%s), %d use(s) per tower, "
            "%d tower(s)",
            names,
            matches[0].kind,
            matches[0].pattern,
            uses,
            len(per_tower),
        )


def _options(match) -> dict:
    options = dict(match.options)
    for name in ("dilations", "dilation_rate", "rate"):
        if name in options and all(d == 1 for d in options[name]):
            options[name] = None  # as a hand registration leaves it
    return options


def _register_single(kind):
    def register(layer_collection, matches, reuse):
        (match,) = matches
        method = getattr(layer_collection, "register_" + kind)
        params, options = match.registration_params, _options(match)
        if kind in ("conv2d", "depthwise_conv2d"):
            strides, padding = options.pop("strides"), options.pop("padding")
            if kind == "conv2d":
                method(
                    params,
                    strides,
                    padding,
                    match.inputs,
                    match.outputs,
                    reuse=reuse,
                    **options,
                )
            else:
                method(
                    params,
                    match.inputs,
                    match.outputs,
                    strides,
                    padding,
                    reuse=reuse,
                    **options,
                )
        elif kind == "convolution":
            padding = options.pop("padding")
            method(params, match.inputs, match.outputs, padding, reuse=reuse, **options)
        else:
            method(params, match.inputs, match.outputs, reuse=reuse)

    return register


def _register_multi(kind):
    def register(layer_collection, matches, reuse):
        method = getattr(layer_collection, "register_{}_multi".format(kind))
        params, options = matches[0].registration_params, _options(matches[0])
        inputs = [m.inputs for m in matches]
        outputs = [m.outputs for m in matches]
        if kind == "conv2d":
            strides, padding = options.pop("strides"), options.pop("padding")
            method(params, strides, padding, inputs, outputs, reuse=reuse, **options)
        else:
            method(params, inputs, outputs, reuse=reuse)

    return register


_MULTI_USE_KINDS = ("fully_connected", "conv2d", "embedding")


def _registration_method(kind, uses):
    if uses == 1:
        return _register_single(kind)
    if kind in _MULTI_USE_KINDS:
        return _register_multi(kind)
    return None


def register_layers(layer_collection, var_list=None, batch_size=None):
    """Registers every unregistered trainable variable the losses depend on.

    Args:
      layer_collection: a `LayerCollection` with its losses registered.
      var_list: the variables to consider (default: the graph's trainable
        variables). Already registered ones are skipped.
      batch_size: per-tower batch size for generic fallbacks (default: the
        first dimension of the first loss input of each tower).

    Returns:
      A list of `Registration`s, one per registered parameter group, in order.

    Raises:
      ValueError: no loss is registered.
      AmbiguousRegistrationError: a variable matches incompatible patterns.
    """
    if not layer_collection.losses:
        raise ValueError(
            "auto_register_layers: register the model's predictive distribution "
            "(register_categorical_predictive_distribution, ...) first: the scan "
            "starts from the registered losses."
        )
    graph = layer_collection.graph
    if var_list is None:
        var_list = graph.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES)
    registered = set(layer_collection.registered_variables)
    variables = [var for var in var_list if var not in registered]
    loss_graph = LossGraph(_loss_inputs(layer_collection), variables)
    for var in variables:
        if not loss_graph.uses[var]:
            LOGGER.info(
                "auto_register_layers: %s is not used by the registered losses; "
                "not registered.",
                _name(var),
            )
    used = [var for var in variables if loss_graph.uses[var]]
    matches, unclaimed = _match_all(loss_graph, used)
    groups = _groups(matches, used)
    registrar = _Registrar(
        layer_collection, Towers(layer_collection.towers_by_loss), batch_size
    )
    grouped = set()
    for key, group_matches in groups.items():
        registrar.register(key, group_matches, unclaimed)
        grouped.update(key)
    for var in used:
        if var not in grouped:
            registrar.fallback(
                (var,),
                "no layer pattern matches its use as "
                + "; ".join(use.describe() for use in unclaimed[var]),
            )
    return registrar.registrations
