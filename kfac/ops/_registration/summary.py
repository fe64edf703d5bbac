"""`LayerCollection.summary()`: one line per block and one per loss.

A block line gives the layer kind, the approximation, each parameter's name
and shape, the towers and uses per tower, and the sizes of the factors it
will have (known from the registration, before any variable exists):
Kronecker blocks `A in×in, G out×out` (`in` counts the bias row), diagonal
and generic blocks the number of entries, an embedding's input factor its
vocabulary (a diagonal).
"""

import math

import numpy as np

from kfac.ops._registration.keys import name_of

_KRONECKER_KINDS = (
    "fully_connected",
    "fully_connected_multi",
    "conv2d",
    "conv2d_multi",
    "convolution",
)


def _shape(var) -> list:
    return list(var.shape.as_list()) if var.shape.rank is not None else ["?"]


def _size(var):
    dims = _shape(var)
    return None if None in dims or "?" in dims else int(np.prod(dims, dtype=np.int64))


def _square(size) -> str:
    return "{0}x{0}".format("?" if size is None else size)


def factor_sizes(record) -> str:
    """The factors of `record`'s block, e.g. "A 785x785, G 10x10"."""
    variables = record.variables
    sizes = [_size(var) for var in variables]
    total = None if None in sizes else sum(sizes)
    if record.kind in ("generic", "scale_and_shift") and record.approximation == "full":
        return "F " + _square(total)
    if record.approximation == "diagonal" or record.kind == "generic":
        return "diagonal {}".format("?" if total is None else total)
    dims = _shape(variables[0])
    if record.kind.startswith("embedding"):
        return "A {} (diagonal), G {}".format(dims[0], _square(dims[-1]))
    if record.kind in _KRONECKER_KINDS and "?" not in dims and None not in dims:
        fan_in = int(np.prod(dims[:-1], dtype=np.int64)) + (len(variables) - 1)
        return "A {}, G {}".format(_square(fan_in), _square(dims[-1]))
    return "?"


def _uses(record) -> str:
    return "generic" if math.isinf(record.uses) else str(record.uses)


def block_line(index: int, record) -> str:
    params = ", ".join(
        "{} {}".format(name_of(var), _shape(var)) for var in record.variables
    )
    return "  {}. {} ({}): {} | towers {}, uses {} | factors {}".format(
        index,
        record.kind,
        record.approximation,
        params,
        len(record.towers),
        _uses(record),
        factor_sizes(record),
    )


def loss_line(name: str, towers) -> str:
    first = towers[0]
    inputs = first.inputs
    described = ", ".join(
        "{} {}".format(t.name, list(t.shape.as_list()) if t.shape.rank else "?")
        for t in (inputs if isinstance(inputs, (tuple, list)) else [inputs])
    )
    return "  loss {!r}: {} of {} | towers {}".format(
        name, type(first).__name__, described, len(towers)
    )


def summary_text(scope: str, records, num_blocks: int, losses_by_name) -> str:
    """The whole summary; blocks without a record are counted on one line."""
    lines = [
        "LayerCollection {!r}: {} blocks, {} losses".format(
            scope, num_blocks, len(losses_by_name)
        )
    ]
    lines += [block_line(i + 1, r) for i, r in enumerate(records)]
    unrecorded = num_blocks - len(records)
    if unrecorded:
        lines.append(
            "  ({} blocks inserted with register_block directly)".format(unrecorded)
        )
    lines += [loss_line(name, towers) for name, towers in losses_by_name.items()]
    return "\n".join(lines)
