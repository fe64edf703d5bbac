"""Utilities shared by every kfac module (API.md §2).

Families live in `kfac/ops/_utils/`; this module re-exports them and owns the
module constants `POSDEF_INV_METHOD` / `POSDEF_EIG_METHOD`: `posdef_inv` /
`posdef_eig` read them when they build their ops, and they are the defaults of
`KfacConfig.posdef_inv_method` / `posdef_eig_method`, read when a
`LayerCollection` (or a stand-alone factor) is made.
"""

import sys

from kfac.ops import _config
from kfac.ops._utils import linalg
from kfac.ops._utils.containers import SequenceDict
from kfac.ops._utils.containers import ensure_sequence
from kfac.ops._utils.conv_patches import conv_output_spatial_shape
from kfac.ops._utils.conv_patches import extract_convolution_patches
from kfac.ops._utils.conv_patches import extract_pointwise_conv2d_patches
from kfac.ops._utils.conv_patches import is_data_format_channel_last
from kfac.ops._utils.conv_patches import num_conv_output_locations
from kfac.ops._utils.graph import SubGraph
from kfac.ops._utils.graph import batch_execute
from kfac.ops._utils.graph import cross_replica_mean
from kfac.ops._utils.graph import fwd_gradients
from kfac.ops._utils.graph import generate_random_signs
from kfac.ops._utils.graph import on_tpu
from kfac.ops._utils.linalg import clipped_eig_inverse
from kfac.ops._utils.linalg import convert_to_dtype
from kfac.ops._utils.linalg import damped_posdef_inverse
from kfac.ops._utils.linalg import floor_damped_eigenvalues
from kfac.ops._utils.linalg import posdef_eig_self_adjoint
from kfac.ops._utils.linalg import posdef_eig_svd
from kfac.ops._utils.linalg import posdef_inv_cholesky
from kfac.ops._utils.linalg import posdef_inv_eig
from kfac.ops._utils.linalg import posdef_inv_matrix_inverse
from kfac.ops._utils.non_finite import NON_FINITE_POLICIES
from kfac.ops._utils.non_finite import all_finite
from kfac.ops._utils.non_finite import check_non_finite_policy
from kfac.ops._utils.non_finite import replace_non_finite
from kfac.ops._utils.non_finite import update_if_finite
from kfac.ops._utils.partitioned_tensor import PartitionedTensor
from kfac.ops._utils.reshape import column_to_tensors
from kfac.ops._utils.reshape import kronecker_product
from kfac.ops._utils.reshape import layer_params_to_mat2d
from kfac.ops._utils.reshape import mat2d_to_layer_params
from kfac.ops._utils.reshape import tensors_to_column
from kfac.ops._utils.sparse import matmul_diag_sparse
from kfac.ops._utils.sparse import matmul_sparse_dense

# Method used by `posdef_inv` (a key of `posdef_inv_functions`).
POSDEF_INV_METHOD = "cholesky"

# Method used by `posdef_eig` (a key of `posdef_eig_functions`).
POSDEF_EIG_METHOD = "self_adjoint"

# The dictionaries the methods are looked up in (shared with `_utils.linalg`).
posdef_inv_functions = linalg.POSDEF_INV_FUNCTIONS
posdef_eig_functions = linalg.POSDEF_EIG_FUNCTIONS


def set_global_constants(posdef_inv_method=None):
    """Sets `POSDEF_INV_METHOD` when `posdef_inv_method` is not None.

    Raises:
      ValueError: `posdef_inv_method` is not a key of `posdef_inv_functions`.
    """
    global POSDEF_INV_METHOD
    if posdef_inv_method is None:
        return
    if posdef_inv_method not in posdef_inv_functions:
        raise ValueError(
            "set_global_constants: posdef_inv_method must be one of %s, got %r."
            % (sorted(posdef_inv_functions), posdef_inv_method)
        )
    POSDEF_INV_METHOD = posdef_inv_method


def posdef_inv(tensor, damping):
    """`(M + d·I)⁻¹` for a symmetric PSD `M` by the method `POSDEF_INV_METHOD`.

    The default ("cholesky") never returns NaNs: see `damped_posdef_inverse`.

    Args:
      tensor: `[n, n]` symmetric PSD Tensor.
      damping: scalar `d` (Python number or Tensor), cast to `tensor.dtype`.

    Returns:
      `[n, n]` Tensor.
    """
    return linalg.posdef_inv(tensor, damping, POSDEF_INV_METHOD)


def posdef_eig(mat):
    """`(eigenvalues, eigenvectors)` of a symmetric PSD `mat` by `POSDEF_EIG_METHOD`."""
    return linalg.posdef_eig(mat, POSDEF_EIG_METHOD)


_config.declare_defaults(
    sys.modules[__name__],
    {
        "posdef_inv_method": "POSDEF_INV_METHOD",
        "posdef_eig_method": "POSDEF_EIG_METHOD",
    },
)


__all__ = [
    "POSDEF_INV_METHOD",
    "POSDEF_EIG_METHOD",
    "posdef_inv_functions",
    "posdef_eig_functions",
    "set_global_constants",
    "SequenceDict",
    "tensors_to_column",
    "column_to_tensors",
    "kronecker_product",
    "layer_params_to_mat2d",
    "mat2d_to_layer_params",
    "posdef_inv",
    "posdef_inv_matrix_inverse",
    "posdef_inv_cholesky",
    "posdef_inv_eig",
    "posdef_eig",
    "posdef_eig_self_adjoint",
    "posdef_eig_svd",
    "damped_posdef_inverse",
    "clipped_eig_inverse",
    "floor_damped_eigenvalues",
    "convert_to_dtype",
    "SubGraph",
    "generate_random_signs",
    "fwd_gradients",
    "on_tpu",
    "cross_replica_mean",
    "ensure_sequence",
    "batch_execute",
    "is_data_format_channel_last",
    "matmul_sparse_dense",
    "matmul_diag_sparse",
    "extract_convolution_patches",
    "extract_pointwise_conv2d_patches",
    "conv_output_spatial_shape",
    "num_conv_output_locations",
    "PartitionedTensor",
    "NON_FINITE_POLICIES",
    "all_finite",
    "check_non_finite_policy",
    "replace_non_finite",
    "update_if_finite",
]
