"""The path shared by `*_multi` registrations: a layer used several times per example.

`inputs`/`outputs` are lists over uses or single folded tensors
`[num_uses * batch, ...]`; `num_uses` must agree with them. Every use is
checked with the kind's own check, then the layer is registered like any other
(`common.register_layer`) with one use per listed input.
"""

import functools

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops._registration.common import register_layer
from kfac.ops._registration.common import resolve_reuse
from kfac.ops._registration.common import tower_arguments
from kfac.ops._registration.shapes import describe
from kfac.ops._registration.shapes import error
from kfac.ops._registration.shapes import static_shape
from kfac.ops._registration.weights import broadcast_weights
from kfac.ops._registration.weights import product


def _named_uses(name, values):
    """`[(argument name, tensor)]` for a list over uses or a single folded tensor."""
    if isinstance(values, (tuple, list)):
        return [("{}[{}]".format(name, i), value) for i, value in enumerate(values)]
    return [(name, values)]


def check_each_use(check, inputs, outputs) -> None:
    """Runs `check(inputs, outputs, names)` on each use of a *_multi registration.

    Inputs and outputs in the same format (both lists over uses, or both single
    folded tensors) are checked pairwise; otherwise each side on its own.
    """
    named_inputs = _named_uses("inputs", inputs)
    named_outputs = _named_uses("outputs", outputs)
    if isinstance(inputs, (tuple, list)) == isinstance(outputs, (tuple, list)):
        for (x_name, x), (y_name, y) in zip(named_inputs, named_outputs):
            check(x, y, (x_name, y_name))
        return
    for x_name, x in named_inputs:
        check(x, None, (x_name, "outputs"))
    for y_name, y in named_outputs:
        check(None, y, ("inputs", y_name))


def check_num_uses(method: str, inputs, outputs, num_uses, required=True) -> None:
    """*_multi registrations: the use lists, `num_uses` and folded rows agree.

    With both `inputs` and `outputs` folded, `num_uses` must be given unless
    `required` is False.
    """
    lengths = [
        (name, len(value))
        for name, value in (("inputs", inputs), ("outputs", outputs))
        if isinstance(value, (tuple, list))
    ]
    if num_uses is not None:
        lengths.append(("num_uses", num_uses))
    if len({length for _, length in lengths}) > 1:
        raise error(
            method,
            "the number of uses disagrees: {}.".format(
                ", ".join("{} {}".format(name, length) for name, length in lengths)
            ),
        )
    if not lengths:
        if not required:
            return
        raise error(
            method,
            "`num_uses` is required when `inputs` and `outputs` are single folded "
            "tensors of shape [num_uses * batch, ...].",
        )
    if lengths[0][1] < 1:
        raise error(
            method, "at least one use is required; got {}.".format(lengths[0][1])
        )
    uses = lengths[0][1]
    for name, value in (("inputs", inputs), ("outputs", outputs)):
        if isinstance(value, (tuple, list)):
            continue
        shape = static_shape(value)
        rows = shape.as_list()[0] if shape.rank else None
        if rows is not None and rows % uses:
            raise error(
                method,
                "folded `{}` of shape {} must have num_uses * batch rows with "
                "num_uses = {}.".format(name, describe(shape), uses),
            )


def _uses_of(method, argument, value, inputs, num_uses, dtype):
    """`value` (per-use weights in any accepted format) in the format of
    `inputs`: a list over uses of `[batch]` tensors, or one folded tensor."""
    listed = isinstance(inputs, (tuple, list))
    uses = len(inputs) if listed else num_uses
    if isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        if not isinstance(value, tf.Tensor):
            value = np.asarray(value)
        rank = static_shape(value).rank
        if rank == 2:
            if uses is None:
                raise error(
                    method, "`num_uses` is needed to read `{}`.".format(argument)
                )
            columns = static_shape(value).as_list()[1]
            if columns is not None and columns != uses:
                raise error(
                    method,
                    "`{}` of shape {} must be [batch, num_uses] with "
                    "num_uses = {}.".format(
                        argument, describe(static_shape(value)), uses
                    ),
                )
            parts = tf.unstack(tf.convert_to_tensor(value), num=uses, axis=1)
        elif listed:
            parts = tf.split(tf.convert_to_tensor(value), uses)
        else:
            return broadcast_weights(method, argument, value, inputs, "inputs", dtype)
    if listed:
        if len(parts) != len(inputs):
            raise error(
                method,
                "`{}` has {} uses but `inputs` has {}.".format(
                    argument, len(parts), len(inputs)
                ),
            )
        return [
            broadcast_weights(
                method,
                "{}[{}]".format(argument, i),
                part,
                use,
                "inputs[{}]".format(i),
                dtype,
            )
            for i, (part, use) in enumerate(zip(parts, inputs))
        ]
    folded = tf.concat([tf.reshape(tf.convert_to_tensor(p), [-1]) for p in parts], 0)
    return broadcast_weights(method, argument, folded, inputs, "inputs", dtype)


def multi_use_weights(method, mask, weights, inputs, num_uses, dtype=None):
    """`mask ∘ weights` of a *_multi registration, in the format of `inputs`.

    Each may be a list over uses of `[batch]` values, one folded
    `[num_uses * batch]` tensor, or `[batch, num_uses]` (as
    `tf.sequence_mask(lengths, num_uses)` gives); None when both are None.
    `dtype`: the weights' dtype when not the inputs' (integer ids).
    """
    mask, weights = (
        None
        if value is None
        else _uses_of(method, name, value, inputs, num_uses, dtype)
        for name, value in (("mask", mask), ("weights", weights))
    )
    return product(mask, weights)


def _num_uses_registered(inputs) -> int:
    """Uses added by a *_multi call: one per listed input, one for a folded tensor.

    A folded model reads the weights once, so it counts as one use (the original
    called `len` on the tensor, API.md §12).
    """
    return len(inputs) if isinstance(inputs, (tuple, list)) else 1


def _check_multi_uses(
    layer_collection, method, params, inputs, outputs, num_uses, reuse
):
    """The use lists and `num_uses` agree; `num_uses` known for a new layer.

    Another tower of an existing block may omit `num_uses` (the block has
    it); `reuse=True` without a block is left to `register_block` (KeyError).
    """
    blocks = layer_collection.fisher_blocks
    key = tuple(params) if isinstance(params, list) else params
    existing = blocks[key] if key in blocks else None
    if num_uses is None and existing is not None:
        # The multi-use blocks keep the count they were built with.
        num_uses = getattr(existing, "num_uses", None)
    required = existing is None and resolve_reuse(reuse) is not True
    check_num_uses(method, inputs, outputs, num_uses, required)


def register_multi_use_layer(
    layer_collection,
    kind,
    params,
    inputs,
    outputs,
    num_uses,
    approx,
    reuse,
    check_use,
    make_block,
    weights=None,
) -> None:
    """`common.register_layer` for a layer used several times per example.

    The use lists and `num_uses` must agree and `check_use(method, params,
    inputs, outputs, names)` pass for every use before `make_block(block_type)`
    builds the block; one use is added per listed input. `weights` (already
    in the format of `inputs`, see `multi_use_weights`) go to the tower.
    """

    def checked_block(block_type, unused_approx):
        _check_multi_uses(
            layer_collection, kind.method, params, inputs, outputs, num_uses, reuse
        )
        check = functools.partial(check_use, kind.method, params)
        check_each_use(check, inputs, outputs)
        return make_block(block_type)

    uses = _num_uses_registered(inputs)
    register_layer(
        layer_collection,
        kind,
        params,
        approx,
        reuse,
        checked_block,
        tower_arguments(inputs, outputs, weights),
        uses,
    )
