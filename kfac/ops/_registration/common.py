"""What every layer registration shares (API.md §6).

A layer kind (`LayerKind`) names its approximations and the block class each
selects. Every `register_*` call takes one path, `register_layer`: resolve the
approximation, build a fresh block (after the kind's argument checks), pass it
through `LayerCollection.register_block` (which returns the existing block
when reusing), add this call's data as a tower of the block in effect, and
count the uses of the parameters. Only public methods of the collection are
used.
"""

import dataclasses
from typing import Any
from typing import Callable
from typing import Mapping
from typing import Optional

import tensorflow.compat.v1 as tf

from kfac.ops._registration.shapes import check_model_dtype

APPROX_KRONECKER_NAME = "kron"
APPROX_DIAGONAL_NAME = "diagonal"
APPROX_EKFAC_NAME = "ekfac"
APPROX_FULL_NAME = "full"
APPROX_KRONECKER_INDEP_NAME = "kron_indep"
APPROX_KRONECKER_SERIES_1_NAME = "kron_series_1"
APPROX_KRONECKER_SERIES_2_NAME = "kron_series_2"
# Shared weights (Eschenhagen et al. 2023): "kron_expand" treats every position
# (time step, use, location) as an example and is the name of what "kron"
# (dense, conv) and "kron_indep" (the *_multi kinds) compute; "kron_reduce"
# aggregates each example's positions before the outer products.
APPROX_KRONECKER_EXPAND_NAME = "kron_expand"
APPROX_KRONECKER_REDUCE_NAME = "kron_reduce"

# Possible value of the `reuse` keyword: use `tf.get_variable_scope().reuse`.
VARIABLE_SCOPE = "VARIABLE_SCOPE"


def resolve_reuse(reuse):
    """`VARIABLE_SCOPE` -> the current variable scope's reuse flag; else `reuse`."""
    if isinstance(reuse, str) and reuse == VARIABLE_SCOPE:
        return tf.get_variable_scope().reuse
    return reuse


def reuse_existing(reuse, exists: bool):
    """Whether a registration adds to the existing entry (truthy) or starts one.

    `reuse` after `resolve_reuse`, with `tf.AUTO_REUSE` meaning "if `exists`".
    """
    reuse = resolve_reuse(reuse)
    if reuse is tf.AUTO_REUSE:
        return exists
    return reuse


def bad_approximation_message(approx, accepted, layer_kind=None) -> str:
    """The ValueError text for an approximation name that is not accepted."""
    layer = " of a {} layer".format(layer_kind.replace("_", " ")) if layer_kind else ""
    return "Bad value {!r} for approx{}; accepted values: {}.".format(
        approx, layer, sorted(accepted)
    )


def block_type_for(approx, approx_to_type: Mapping[str, Any]):
    """`approx_to_type[approx]`; ValueError("Bad value ... for approx") if absent."""
    if approx not in approx_to_type:
        raise ValueError(bad_approximation_message(approx, approx_to_type))
    return approx_to_type[approx]


def has_bias(params) -> bool:
    """Bias presence, as the blocks decide it: `params` is a `(weights, bias)` pair."""
    return isinstance(params, (tuple, list))


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """A layer kind: its approximations and how one is chosen.

    The approximation of a registration is the explicit `approx`, else the one
    linked to exactly its parameters (`define_linked_parameters`), else the
    collection's default for the kind (initially `default`). A `fixed` kind
    always uses `default`: an explicit `approx` may only name it.

    Attributes:
      name: the kind ("fully_connected"); `register_<name>` registers it.
      approximations: approximation name -> block constructor.
      default: the approximation of a new collection.
      fixed: True if links and the collection's defaults are ignored.
      single_params: what `params` must be if the kind takes no bias (a
        `(weights, bias)` pair is then a ValueError); None if it takes one.
    """

    name: str
    approximations: Mapping[str, Callable]
    default: str
    fixed: bool = False
    single_params: Optional[str] = None

    @property
    def method(self) -> str:
        """The registration method ("conv2d" -> "register_conv2d")."""
        return "register_" + self.name

    def check_approximation(self, approx) -> None:
        """ValueError("Bad value ... for approx of a <kind> layer") unless accepted."""
        if approx not in self.approximations:
            raise ValueError(
                bad_approximation_message(approx, self.approximations, self.name)
            )

    def resolve(self, layer_collection, params, approx):
        """`(block constructor, approximation name)` for one registration."""
        if self.fixed:
            if approx is not None and approx not in list(self.approximations):
                raise ValueError(
                    "{}: {}".format(
                        self.method,
                        bad_approximation_message(
                            approx, self.approximations, self.name
                        ),
                    )
                )
            return self.approximations[self.default], self.default
        approx = layer_collection.resolve_approximation(self.name, params, approx)
        return block_type_for(approx, self.approximations), approx


def add_layer(
    layer_collection, params, block, reuse, tower_args, uses, kind=None, approx=None
) -> None:
    """register_block, then add a tower to the block in effect, then the uses.

    Raises:
      ValueError: `params` are not floating or their dtype differs from the
        layers already registered (before anything is inserted).
    """
    check_model_dtype(params, layer_collection.registered_variables)
    block = layer_collection.register_block(params, block, reuse=reuse)
    block.register_additional_tower(*tower_args)
    layer_collection.add_uses(params, uses)
    if kind is not None:
        layer_collection.record_layer(params, kind, approx, tower_args, uses, block)


def tower_arguments(inputs, outputs, weights) -> tuple:
    """`register_additional_tower`'s arguments: `(inputs, outputs)`, and the
    position weights when there are any."""
    if weights is None:
        return (inputs, outputs)
    return (inputs, outputs, weights)


def check_weights_supported(kind, approx, weights, supported) -> None:
    """ValueError unless `weights` is None or `approx` is in `supported`."""
    if weights is None or approx in supported:
        return
    raise ValueError(
        "{}: a mask or weights cannot be used with approx={!r}; approximations "
        "that take them: {}.".format(kind.method, approx, sorted(supported))
    )


def register_layer(
    layer_collection,
    kind,
    params,
    approx,
    reuse,
    make_block: Callable[[Callable, Optional[str]], Any],
    tower_args: tuple,
    uses=1,
) -> None:
    """Resolves the block class, builds the block, registers it, its tower and uses.

    A bad `approx` is reported first, then a bias where the kind has none;
    `make_block(block_type, approx)` checks the other arguments and builds the
    block, which `add_layer` registers (or swaps for the existing one when
    reusing) and gives the tower `tower_args` and `uses` uses.
    """
    block_type, approx = kind.resolve(layer_collection, params, approx)
    if kind.single_params is not None and has_bias(params):
        raise ValueError(
            "{}: Bias not supported; `params` must be {}.".format(
                kind.method, kind.single_params
            )
        )
    block = make_block(block_type, approx)
    add_layer(
        layer_collection, params, block, reuse, tower_args, uses, kind.name, approx
    )
