"""Parameter keys of blocks and linked groups: no variable belongs to two.

A key is a Tensor/Variable or a tuple of them (a list is the same key as the
tuple). `insert_block` and `check_linkable` hold the rules of
`LayerCollection.register_block` and `define_linked_parameters`; they work on
any dict of blocks (tests replace `fisher_blocks` with a plain dict).
"""

from kfac.ops._registration.common import reuse_existing
from kfac.ops._utils.containers import ensure_sequence


def canonical_key(key):
    """A list key as a tuple (so `[z0, z1]` and `(z0, z1)` are one key)."""
    return tuple(key) if isinstance(key, (tuple, list)) else key


def name_of(value) -> str:
    """A tensor's or variable's name for messages (its repr if it has none)."""
    return getattr(value, "name", None) or repr(value)


def key_names(key) -> str:
    """The names of a key's tensors, parenthesised for a tuple key."""
    if isinstance(key, (tuple, list)):
        return "({})".format(", ".join(name_of(part) for part in key))
    return name_of(key)


def insert_block(blocks, layer_key, fisher_block, reuse):
    """`LayerCollection.register_block` on the dict `blocks`; the block in effect."""
    layer_key = canonical_key(layer_key)
    if reuse_existing(reuse, layer_key in blocks):
        if layer_key not in blocks:
            raise KeyError(
                "No FisherBlock registered for {} to reuse; register it with "
                "reuse=False first.".format(key_names(layer_key))
            )
        existing = blocks[layer_key]
        if type(existing) is not type(fisher_block):
            raise ValueError(
                "Attempted to register FisherBlock of type {} for {} when the "
                "existing FisherBlock has type {}.".format(
                    type(fisher_block).__name__,
                    key_names(layer_key),
                    type(existing).__name__,
                )
            )
        return existing
    if layer_key in blocks:
        raise ValueError(
            "FisherBlock for {} is already in LayerCollection; pass reuse=True "
            "to register another tower.".format(key_names(layer_key))
        )
    new_variables = set(ensure_sequence(layer_key))
    for key, block in blocks.items():
        for variable in ensure_sequence(key):
            if variable in new_variables:
                raise ValueError(
                    "Attempted to register layer_key {} with block {}, but "
                    "variable {} was already registered in key {} with block "
                    "{}.".format(
                        key_names(layer_key),
                        fisher_block,
                        name_of(variable),
                        key_names(key),
                        block,
                    )
                )
    blocks[layer_key] = fisher_block
    return fisher_block


def check_linkable(blocks, linked_groups, params) -> frozenset:
    """The group of `params`, after checking it may be linked (ValueError if not).

    Its variables must not be registered under another key nor belong to one
    of `linked_groups`.
    """
    group = frozenset(ensure_sequence(params))
    for key, block in blocks.items():
        registered = frozenset(ensure_sequence(key))
        shared = group & registered
        if shared and registered != group:
            raise ValueError(
                "Can't link parameters {}: variable {} was already registered "
                "in group {} with layer {}.".format(
                    key_names(params),
                    name_of(next(iter(shared))),
                    key_names(key),
                    block,
                )
            )
    for other in linked_groups:
        shared = group & other
        if shared:
            raise ValueError(
                "Can't link parameters {}: variable {} was already linked in "
                "group {}.".format(
                    key_names(params),
                    name_of(next(iter(shared))),
                    key_names(tuple(other)),
                )
            )
    return group
