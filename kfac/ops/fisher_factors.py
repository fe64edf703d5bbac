"""Fisher factors: covariance statistics, their moving averages and inverses.

A factor owns one non-trainable covariance-like variable (`cov`), an op that
folds a fresh mini-batch estimate into it by exponential moving average, and
(for `InverseProvidingFactor`) variables holding damped matrix powers of it
(Martens & Grosse 2015; Grosse & Martens 2016 for convolutions). See API.md §4.

The families live in `kfac/ops/_factors/`; this module re-exports them and owns
the original's module constants. They are the *defaults* of `KfacConfig`
(`kfac/ops/_config.py`): read once when a `LayerCollection` (or a stand-alone
factor) is made, so assigning one, or `set_global_constants`, affects
collections made afterwards, not existing ones.
"""

import sys
from typing import Optional

from kfac.ops import _config
from kfac.ops._factors.base import FisherFactor
from kfac.ops._factors.conv import ConvDiagonalFactor
from kfac.ops._factors.conv import ConvInputKroneckerFactor
from kfac.ops._factors.conv import ConvOutputKroneckerFactor
from kfac.ops._factors.dense import FullFactor
from kfac.ops._factors.dense import NaiveDiagonalFactor
from kfac.ops._factors.diagonal import DiagonalFactor
from kfac.ops._factors.eigenbasis import ConvEigenbasisFactor
from kfac.ops._factors.eigenbasis import FullyConnectedEigenbasisFactor
from kfac.ops._factors.embedding import EmbeddingInputKroneckerFactor
from kfac.ops._factors.fully_connected import FullyConnectedDiagonalFactor
from kfac.ops._factors.fully_connected import FullyConnectedKroneckerFactor
from kfac.ops._factors.inverse_providing import InverseProvidingFactor
from kfac.ops._factors.multi_use import FullyConnectedMultiKF
from kfac.ops._factors.naming import graph_func_to_id
from kfac.ops._factors.naming import graph_func_to_string
from kfac.ops._factors.naming import list_to_string
from kfac.ops._factors.naming import scalar_or_tensor_to_string
from kfac.ops._factors.naming import scope_string_from_name
from kfac.ops._factors.naming import scope_string_from_params
from kfac.ops._factors.scale_and_shift import ScaleAndShiftDiagonalFactor
from kfac.ops._factors.scale_and_shift import ScaleAndShiftFullFactor
from kfac.ops._factors.statistics import append_homog
from kfac.ops._factors.statistics import compute_cov
from kfac.ops._factors.statistics import covariance_initializer
from kfac.ops._factors.statistics import diagonal_covariance_initializer
from kfac.ops._factors.statistics import inverse_initializer
from kfac.ops._factors.statistics import place_on_device

# Initial covariance: identity (dense) / ones (diagonal) when False, zeros when True.
INIT_COVARIANCES_AT_ZERO = False

# Passed as `zero_debias` to the covariance moving-average update.
ZERO_DEBIAS = False

# When the number of registered inverses (exp = -1) on one factor reaches this
# value, all matrix powers of that factor come from one eigendecomposition.
EIGENVALUE_DECOMPOSITION_THRESHOLD = 2

# Eigenvalues of a covariance estimate are clipped from below to this value
# before they are used for inverses or matrix powers. Must be nonnegative.
EIGENVALUE_CLIPPING_THRESHOLD = 0.0

# "concat": towers are merged into one PartitionedTensor before a factor sees
# them; "separate": a factor gets a tuple over towers, computes each statistic
# on that tower's device and averages them.
TOWER_STRATEGY = "concat"

# Port additions (kfac 0.2 has the same switches): a convolution's input
# factor estimated from a random part of the batch's examples
# (SUB_SAMPLE_INPUTS, that fraction: INPUTS_TO_EXTRACT_PATCHES_FACTOR) and/or
# of its patches (SUB_SAMPLE_PATCHES, at most MAX_NUM_PATCHES_PER_DIMENSION
# times the patch size). Registrations may override the two switches.
SUB_SAMPLE_INPUTS = False
SUB_SAMPLE_PATCHES = False
INPUTS_TO_EXTRACT_PATCHES_FACTOR = 0.5
MAX_NUM_PATCHES_PER_DIMENSION = 3.0

_config.declare_defaults(
    sys.modules[__name__],
    {
        "init_covariances_at_zero": "INIT_COVARIANCES_AT_ZERO",
        "zero_debias": "ZERO_DEBIAS",
        "eigenvalue_decomposition_threshold": "EIGENVALUE_DECOMPOSITION_THRESHOLD",
        "eigenvalue_clipping_threshold": "EIGENVALUE_CLIPPING_THRESHOLD",
        "tower_strategy": "TOWER_STRATEGY",
        "sub_sample_inputs": "SUB_SAMPLE_INPUTS",
        "sub_sample_patches": "SUB_SAMPLE_PATCHES",
        "inputs_to_extract_patches_factor": "INPUTS_TO_EXTRACT_PATCHES_FACTOR",
        "max_num_patches_per_dimension": "MAX_NUM_PATCHES_PER_DIMENSION",
    },
)


def set_global_constants(
    init_covariances_at_zero: Optional[bool] = None,
    zero_debias: Optional[bool] = None,
    eigenvalue_decomposition_threshold: Optional[int] = None,
    eigenvalue_clipping_threshold: Optional[float] = None,
    tower_strategy: Optional[str] = None,
    sub_sample_inputs: Optional[bool] = None,
    sub_sample_patches: Optional[bool] = None,
    inputs_to_extract_patches_factor: Optional[float] = None,
    max_num_patches_per_dimension: Optional[float] = None,
) -> None:
    """Overwrites each constant whose argument is not None.

    The constants are the defaults of the collections (and stand-alone
    factors) made afterwards. `tower_strategy` is not validated here (the
    original accepted anything); an unknown strategy raises a ValueError when
    a factor or block uses it. The last four are port additions (see
    `SUB_SAMPLE_INPUTS`); their values are checked when a collection is made.
    """
    given = dict(
        INIT_COVARIANCES_AT_ZERO=init_covariances_at_zero,
        ZERO_DEBIAS=zero_debias,
        EIGENVALUE_DECOMPOSITION_THRESHOLD=eigenvalue_decomposition_threshold,
        EIGENVALUE_CLIPPING_THRESHOLD=eigenvalue_clipping_threshold,
        TOWER_STRATEGY=tower_strategy,
        SUB_SAMPLE_INPUTS=sub_sample_inputs,
        SUB_SAMPLE_PATCHES=sub_sample_patches,
        INPUTS_TO_EXTRACT_PATCHES_FACTOR=inputs_to_extract_patches_factor,
        MAX_NUM_PATCHES_PER_DIMENSION=max_num_patches_per_dimension,
    )
    globals().update(
        {name: value for name, value in given.items() if value is not None})


__all__ = [
    "ScaleAndShiftDiagonalFactor",
    "ScaleAndShiftFullFactor",
    "INIT_COVARIANCES_AT_ZERO",
    "ZERO_DEBIAS",
    "EIGENVALUE_DECOMPOSITION_THRESHOLD",
    "EIGENVALUE_CLIPPING_THRESHOLD",
    "TOWER_STRATEGY",
    "set_global_constants",
    "inverse_initializer",
    "covariance_initializer",
    "diagonal_covariance_initializer",
    "place_on_device",
    "compute_cov",
    "append_homog",
    "scope_string_from_params",
    "scope_string_from_name",
    "scalar_or_tensor_to_string",
    "list_to_string",
    "graph_func_to_id",
    "graph_func_to_string",
    "FisherFactor",
    "InverseProvidingFactor",
    "DiagonalFactor",
    "FullFactor",
    "NaiveDiagonalFactor",
    "EmbeddingInputKroneckerFactor",
    "FullyConnectedDiagonalFactor",
    "ConvDiagonalFactor",
    "FullyConnectedKroneckerFactor",
    "FullyConnectedEigenbasisFactor",
    "ConvEigenbasisFactor",
    "ConvInputKroneckerFactor",
    "ConvOutputKroneckerFactor",
    "FullyConnectedMultiKF",
]
