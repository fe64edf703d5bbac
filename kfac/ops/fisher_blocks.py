"""Fisher blocks: the approximate Fisher of one layer's parameter group (API.md §5).

A block records the layer's data per tower, builds its factors through the
owning `LayerCollection` (so identical factors are shared), registers the
matrix powers it needs, and multiplies parameter-shaped vectors by damped powers
of itself. The implementation lives in `kfac.ops._blocks`, one family per file;
this module is the public surface.

`NORMALIZE_DAMPING_POWER` and `PI_TYPE` are stored in `kfac.ops._blocks.config`;
reading or assigning them here (or calling `set_global_constants`) reads or
writes that single copy (they are not in `__all__`: a star-import would copy
them).
"""

from kfac.ops import _forwarding
from kfac.ops._blocks import config as _config
from kfac.ops._blocks.base import FisherBlock
from kfac.ops._blocks.config import PI_OFF_NAME
from kfac.ops._blocks.config import PI_TRACENORM_NAME
from kfac.ops._blocks.config import set_global_constants
from kfac.ops._blocks.conv import ConvDiagonalFB
from kfac.ops._blocks.conv import ConvKFCBasicFB
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
from kfac.ops._blocks.embedding import EmbeddingKFACFB
from kfac.ops._blocks.embedding import EmbeddingKFACMultiIndepFB
from kfac.ops._blocks.kronecker import FullyConnectedKFACBasicFB
from kfac.ops._blocks.kronecker import KroneckerProductFB
from kfac.ops._blocks.multi_use import ConvKFCBasicMultiIndepFB
from kfac.ops._blocks.multi_use import FullyConnectedMultiIndepFB
from kfac.ops._blocks.series import FullyConnectedSeriesFB
from kfac.ops._blocks.series import SeriesFBApproximation
from kfac.ops._blocks.towers import InputOutputMultiTower
from kfac.ops._blocks.towers import InputOutputMultiTowerMultiUse

__all__ = [
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
    "ConvKFCBasicFB",
    "DepthwiseConvDiagonalFB",
    "DepthwiseConvKFCBasicFB",
    "depthwise_conv2d_filter_to_conv2d_filter",
    "conv2d_filter_to_depthwise_conv2d_filter",
    "maybe_tuple",
    "num_conv_locations",
    "FullyConnectedMultiIndepFB",
    "ConvKFCBasicMultiIndepFB",
    "EmbeddingKFACMultiIndepFB",
    "SeriesFBApproximation",
    "FullyConnectedSeriesFB",
]

_FORWARDED_CONSTANTS = ("NORMALIZE_DAMPING_POWER", "PI_TYPE")


_forwarding.forward_constants(__name__, _config, _FORWARDED_CONSTANTS)
