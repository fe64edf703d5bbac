"""Fisher factors: covariance statistics, their moving averages and inverses.

A factor owns one non-trainable covariance-like variable (`cov`), an op that
folds a fresh mini-batch estimate into it by exponential moving average, and
(for `InverseProvidingFactor`) variables holding damped matrix powers of it
(Martens & Grosse 2015; Grosse & Martens 2016 for convolutions). See API.md §4.

The families live in `kfac/ops/_factors/`; this module re-exports them. The
module constants (`TOWER_STRATEGY`, ...) are stored in `_factors/config.py`:
reading `fisher_factors.TOWER_STRATEGY` forwards there, and so does
assigning it (the original's constants were plain module globals);
`set_global_constants` is the documented way to change them.
"""

from kfac.ops import _forwarding
from kfac.ops._factors import config as _config
from kfac.ops._factors.base import DiagonalFactor
from kfac.ops._factors.base import FisherFactor
from kfac.ops._factors.base import InverseProvidingFactor
from kfac.ops._factors.base import append_homog
from kfac.ops._factors.base import compute_cov
from kfac.ops._factors.base import covariance_initializer
from kfac.ops._factors.base import diagonal_covariance_initializer
from kfac.ops._factors.base import inverse_initializer
from kfac.ops._factors.base import place_on_device
from kfac.ops._factors.config import set_global_constants
from kfac.ops._factors.conv import ConvDiagonalFactor
from kfac.ops._factors.conv import ConvInputKroneckerFactor
from kfac.ops._factors.conv import ConvOutputKroneckerFactor
from kfac.ops._factors.dense import FullFactor
from kfac.ops._factors.dense import NaiveDiagonalFactor
from kfac.ops._factors.embedding import EmbeddingInputKroneckerFactor
from kfac.ops._factors.fully_connected import FullyConnectedDiagonalFactor
from kfac.ops._factors.fully_connected import FullyConnectedKroneckerFactor
from kfac.ops._factors.multi_use import FullyConnectedMultiKF
from kfac.ops._factors.naming import graph_func_to_id
from kfac.ops._factors.naming import graph_func_to_string
from kfac.ops._factors.naming import list_to_string
from kfac.ops._factors.naming import scalar_or_tensor_to_string
from kfac.ops._factors.naming import scope_string_from_name
from kfac.ops._factors.naming import scope_string_from_params

_forwarding.forward_constants(__name__, _config, _config.CONSTANT_NAMES)

__all__ = [
    "INIT_COVARIANCES_AT_ZERO",  # noqa: F822 (served by the module __getattr__)
    "ZERO_DEBIAS",  # noqa: F822 (served by the module __getattr__)
    "EIGENVALUE_DECOMPOSITION_THRESHOLD",  # noqa: F822 (served by the module __getattr__)
    "EIGENVALUE_CLIPPING_THRESHOLD",  # noqa: F822 (served by the module __getattr__)
    "TOWER_STRATEGY",  # noqa: F822 (served by the module __getattr__)
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
    "ConvInputKroneckerFactor",
    "ConvOutputKroneckerFactor",
    "FullyConnectedMultiKF",
]
