"""Approximation names and the block class each one selects (API.md §6).

For every layer kind the table maps an approximation name to the name of a
`fisher_blocks` class (plus fixed constructor keywords). Classes are looked up
when a layer is registered rather than at import time, so that importing
`layer_collection` never depends on which block classes exist yet.
"""

import functools

from kfac.ops import fisher_blocks

APPROX_KRONECKER_NAME = "kron"
APPROX_DIAGONAL_NAME = "diagonal"
APPROX_FULL_NAME = "full"
APPROX_KRONECKER_INDEP_NAME = "kron_indep"
APPROX_KRONECKER_SERIES_1_NAME = "kron_series_1"
APPROX_KRONECKER_SERIES_2_NAME = "kron_series_2"

# Possible value of the `reuse` keyword: use `tf.get_variable_scope().reuse`.
VARIABLE_SCOPE = "VARIABLE_SCOPE"

GENERIC = "generic"
FULLY_CONNECTED = "fully_connected"
CONV2D = "conv2d"
EMBEDDING = "embedding"
FULLY_CONNECTED_MULTI = "fully_connected_multi"
CONV2D_MULTI = "conv2d_multi"
EMBEDDING_MULTI = "embedding_multi"

# layer kind -> {approximation name -> (fisher_blocks class name, fixed kwargs)}.
_BLOCK_TABLE = {
    GENERIC: {
        APPROX_FULL_NAME: ("FullFB", {}),
        APPROX_DIAGONAL_NAME: ("NaiveDiagonalFB", {}),
    },
    FULLY_CONNECTED: {
        APPROX_KRONECKER_NAME: ("FullyConnectedKFACBasicFB", {}),
        APPROX_DIAGONAL_NAME: ("FullyConnectedDiagonalFB", {}),
    },
    CONV2D: {
        APPROX_KRONECKER_NAME: ("ConvKFCBasicFB", {}),
        APPROX_DIAGONAL_NAME: ("ConvDiagonalFB", {}),
    },
    EMBEDDING: {
        APPROX_KRONECKER_NAME: ("EmbeddingKFACFB", {}),
    },
    FULLY_CONNECTED_MULTI: {
        APPROX_KRONECKER_INDEP_NAME: ("FullyConnectedMultiIndepFB", {}),
        APPROX_KRONECKER_SERIES_1_NAME: ("FullyConnectedSeriesFB", {"option": 1}),
        APPROX_KRONECKER_SERIES_2_NAME: ("FullyConnectedSeriesFB", {"option": 2}),
    },
    CONV2D_MULTI: {
        APPROX_KRONECKER_INDEP_NAME: ("ConvKFCBasicMultiIndepFB", {}),
    },
    EMBEDDING_MULTI: {
        APPROX_KRONECKER_INDEP_NAME: ("EmbeddingKFACMultiIndepFB", {}),
    },
}

# The default approximation of each layer kind in a new LayerCollection.
DEFAULT_APPROXIMATIONS = {
    GENERIC: APPROX_FULL_NAME,
    FULLY_CONNECTED: APPROX_KRONECKER_NAME,
    CONV2D: APPROX_KRONECKER_NAME,
    EMBEDDING: APPROX_KRONECKER_NAME,
    FULLY_CONNECTED_MULTI: APPROX_KRONECKER_INDEP_NAME,
    CONV2D_MULTI: APPROX_KRONECKER_INDEP_NAME,
    EMBEDDING_MULTI: APPROX_KRONECKER_INDEP_NAME,
}


def accepted_approximations(layer_kind: str) -> list:
    """The approximation names accepted for `layer_kind`, sorted."""
    return sorted(_BLOCK_TABLE[layer_kind])


def bad_approximation_message(approx, accepted, layer_kind=None) -> str:
    """The ValueError text for an approximation name that is not accepted."""
    layer = " of a {} layer".format(layer_kind.replace("_", " ")) if layer_kind else ""
    return "Bad value {!r} for approx{}; accepted values: {}.".format(
        approx, layer, sorted(accepted)
    )


def check_approximation(layer_kind: str, approx) -> None:
    """Raises ValueError("Bad value ... for approx ...") unless `approx` is accepted."""
    if approx not in _BLOCK_TABLE[layer_kind]:
        raise ValueError(
            bad_approximation_message(approx, _BLOCK_TABLE[layer_kind], layer_kind)
        )


def block_types(layer_kind: str) -> dict:
    """Approximation name -> block constructor for `layer_kind`.

    The series approximations are `FullyConnectedSeriesFB` with `option` bound
    (a `functools.partial`), as in the original.
    """
    table = {}
    for approx, (class_name, fixed_kwargs) in _BLOCK_TABLE[layer_kind].items():
        block_class = getattr(fisher_blocks, class_name)
        if fixed_kwargs:
            block_class = functools.partial(block_class, **fixed_kwargs)
        table[approx] = block_class
    return table
