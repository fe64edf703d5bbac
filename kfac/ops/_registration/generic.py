"""Parameters without layer structure: the Fisher of `params` as one block.

Approximations: "full" (`FullFB`, default) or "diagonal" (`NaiveDiagonalFB`).
Each tower gives its batch size. The uses are counted as infinite, so
`check_registration` never reports a use mismatch for them.
"""

import numbers

import numpy as np

from kfac.ops._blocks.dense import FullFB
from kfac.ops._blocks.dense import NaiveDiagonalFB
from kfac.ops._registration.common import APPROX_DIAGONAL_NAME
from kfac.ops._registration.common import APPROX_FULL_NAME
from kfac.ops._registration.common import VARIABLE_SCOPE
from kfac.ops._registration.common import LayerKind
from kfac.ops._registration.common import register_layer
from kfac.ops._registration.shapes import check_rank
from kfac.ops._registration.shapes import error

GENERIC = LayerKind(
    "generic",
    {APPROX_FULL_NAME: FullFB, APPROX_DIAGONAL_NAME: NaiveDiagonalFB},
    default=APPROX_FULL_NAME,
)


def check_batch_size(method: str, batch_size) -> None:
    """A positive number or a scalar Tensor."""
    if isinstance(batch_size, bool):
        raise error(
            method,
            "`batch_size` must be a positive number; got {!r}.".format(batch_size),
        )
    if isinstance(batch_size, (numbers.Real, np.number)):
        if not batch_size > 0:
            raise error(
                method, "`batch_size` must be positive; got {!r}.".format(batch_size)
            )
        return
    check_rank(method, "batch_size", batch_size, 0, "[]")


def register_generic(
    layer_collection, params, batch_size, approx=None, reuse=VARIABLE_SCOPE
) -> None:
    """Registers parameters without layer structure (`FullFB` or `NaiveDiagonalFB`).

    Their uses are counted as infinite, so `check_registration` never reports
    a use mismatch for them.

    Args:
      params: a variable or a tuple of variables.
      batch_size: this tower's batch size (positive int or scalar Tensor).
      approx: "full" (default) or "diagonal".
      reuse: see `register_block`.
    """

    def make_block(block_type, unused_approx):
        check_batch_size(GENERIC.method, batch_size)
        return block_type(layer_collection.factor_cache, params)

    register_layer(
        layer_collection,
        GENERIC,
        params,
        approx,
        reuse,
        make_block,
        (batch_size,),
        float("inf"),
    )
