"""Fisher blocks: the approximate Fisher of one layer's parameter group (API.md §5).

A block records the layer's data per tower, builds its factors through the
owning `LayerCollection` (so identical factors are shared), registers the
matrix powers it needs, and multiplies parameter-shaped vectors by damped powers
of itself. The implementation lives in `kfac.ops._blocks`, one family per file;
this module is the public surface.

`NORMALIZE_DAMPING_POWER` and `PI_TYPE` are this module's constants, the
defaults of `KfacConfig` (`kfac/ops/_config.py`): read once when a
`LayerCollection` (or a stand-alone block) is made, so assigning one, or
`set_global_constants`, affects collections made afterwards (they are not in
`__all__`, as in the original).
"""

import sys
from typing import Optional

from kfac.ops import _config
from kfac.ops._blocks.base import FisherBlock
from kfac.ops._blocks.conv import ConvDiagonalFB
from kfac.ops._blocks.conv import ConvKFCBasicFB
from kfac.ops._blocks.conv import ConvKFCReduceFB
from kfac.ops._blocks.conv import DepthwiseConvDiagonalFB
from kfac.ops._blocks.conv import DepthwiseConvKFCBasicFB
from kfac.ops._blocks.conv import conv2d_filter_to_depthwise_conv2d_filter
from kfac.ops._blocks.conv import depthwise_conv2d_filter_to_conv2d_filter
from kfac.ops._blocks.conv import maybe_tuple
from kfac.ops._blocks.conv import num_conv_locations
from kfac.ops._blocks.damping import PackagedFunc
from kfac.ops._blocks.damping import _package_func  # noqa: F401 (original tests use it)
from kfac.ops._blocks.damping import compute_pi_adjusted_damping
from kfac.ops._blocks.damping import compute_pi_tracenorm
from kfac.ops._blocks.damping import normalize_damping
from kfac.ops._blocks.dense import FullFB
from kfac.ops._blocks.dense import NaiveDiagonalFB
from kfac.ops._blocks.diagonal import FullyConnectedDiagonalFB
from kfac.ops._blocks.eigenbasis import ConvEKFACFB
from kfac.ops._blocks.eigenbasis import FullyConnectedEKFACFB
from kfac.ops._blocks.embedding import EmbeddingKFACFB
from kfac.ops._blocks.embedding import EmbeddingKFACMultiIndepFB
from kfac.ops._blocks.kronecker import FullyConnectedKFACBasicFB
from kfac.ops._blocks.kronecker import FullyConnectedKFACReduceFB
from kfac.ops._blocks.kronecker import KroneckerProductFB
from kfac.ops._blocks.multi_use import ConvKFCBasicMultiIndepFB
from kfac.ops._blocks.multi_use import FullyConnectedMultiIndepFB
from kfac.ops._blocks.multi_use import FullyConnectedMultiReduceFB
from kfac.ops._blocks.scale_and_shift import ScaleAndShiftDiagonalFB
from kfac.ops._blocks.scale_and_shift import ScaleAndShiftFullFB
from kfac.ops._blocks.series import FullyConnectedSeriesFB
from kfac.ops._blocks.series import SeriesFBApproximation
from kfac.ops._blocks.towers import InputOutputMultiTower
from kfac.ops._blocks.towers import InputOutputMultiTowerMultiUse
from kfac.ops._config import PI_OFF_NAME
from kfac.ops._config import PI_TRACENORM_NAME
from kfac.ops._config import PI_TYPES

# Damping of a block whose parameters are used at `n` locations/uses is divided
# by `n ** NORMALIZE_DAMPING_POWER` before the pi split (0 turns this off).
NORMALIZE_DAMPING_POWER = 1.0

# How the damping of a Kronecker block is split between its two factors.
PI_TYPE = PI_TRACENORM_NAME

_config.declare_defaults(
    sys.modules[__name__],
    {"normalize_damping_power": "NORMALIZE_DAMPING_POWER", "pi_type": "PI_TYPE"},
)


def set_global_constants(
    normalize_damping_power: Optional[float] = None, pi_type: Optional[str] = None
) -> None:
    """Overwrites the block constants whose argument is not None.

    They are the defaults of the collections (and stand-alone blocks) made
    afterwards.

    Args:
        normalize_damping_power: new `NORMALIZE_DAMPING_POWER` (a number >= 0).
        pi_type: new `PI_TYPE`, `"tracenorm"` or `"off"`.

    Raises:
        ValueError: for a `pi_type` other than those two names.
    """
    global NORMALIZE_DAMPING_POWER, PI_TYPE
    if pi_type is not None and pi_type not in PI_TYPES:
        raise ValueError(
            "set_global_constants: pi_type must be one of %s, got %r."
            % (PI_TYPES, pi_type)
        )
    if normalize_damping_power is not None:
        NORMALIZE_DAMPING_POWER = normalize_damping_power
    if pi_type is not None:
        PI_TYPE = pi_type


__all__ = [
    "ScaleAndShiftDiagonalFB",
    "ScaleAndShiftFullFB",
    "PI_OFF_NAME",
    "PI_TRACENORM_NAME",
    "set_global_constants",
    "normalize_damping",
    "compute_pi_tracenorm",
    "compute_pi_adjusted_damping",
    "PackagedFunc",
    "FisherBlock",
    "FullFB",
    "NaiveDiagonalFB",
    "InputOutputMultiTower",
    "InputOutputMultiTowerMultiUse",
    "FullyConnectedDiagonalFB",
    "ConvDiagonalFB",
    "KroneckerProductFB",
    "EmbeddingKFACFB",
    "FullyConnectedKFACBasicFB",
    "FullyConnectedKFACReduceFB",
    "ConvKFCBasicFB",
    "ConvKFCReduceFB",
    "FullyConnectedEKFACFB",
    "ConvEKFACFB",
    "DepthwiseConvDiagonalFB",
    "DepthwiseConvKFCBasicFB",
    "depthwise_conv2d_filter_to_conv2d_filter",
    "conv2d_filter_to_depthwise_conv2d_filter",
    "maybe_tuple",
    "num_conv_locations",
    "FullyConnectedMultiIndepFB",
    "FullyConnectedMultiReduceFB",
    "ConvKFCBasicMultiIndepFB",
    "EmbeddingKFACMultiIndepFB",
    "SeriesFBApproximation",
    "FullyConnectedSeriesFB",
]
