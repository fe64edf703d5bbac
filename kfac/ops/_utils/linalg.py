"""Inverses and eigendecompositions of damped symmetric PSD matrices.

Every function computes something of `M + d·I` for a symmetric positive
semi-definite `M` (a Kronecker factor or a full Fisher block) and a damping
`d >= 0` (Martens & Grosse 2015, §6.3: the damped factors are inverted).

Port improvement: the original returned NaNs (Cholesky of a numerically
indefinite matrix) or inverted tiny/negative eigenvalues. Here the Cholesky
inverse checks its result and, when it is not finite, falls back to an
eigendecomposition whose eigenvalues are clipped (`clipped_eig_inverse`), so a
rank-deficient `M` with a tiny damping still gives a finite inverse.
"""

import numpy as np
import tensorflow.compat.v1 as tf


def _check_square(matrix, arg_name: str, func_name: str):
    if matrix.shape.ndims is None:
        return
    dims = matrix.shape.as_list()
    if len(dims) != 2 or (None not in dims and dims[0] != dims[1]):
        raise ValueError(
            "%s: %s must be a square matrix, got shape %s."
            % (func_name, arg_name, matrix.shape)
        )


def convert_to_dtype(value, dtype):
    """`value` as a Tensor of `dtype`, without a float32 detour for numbers.

    `tf.cast(0.3, tf.float64)` first makes a float32 constant (0.30000001...);
    Python/numpy numbers are therefore converted directly at `dtype`, while
    Tensors and Variables are cast.
    """
    if isinstance(value, (tf.Tensor, tf.compat.v2.Variable)):
        return tf.cast(value, dtype)
    return tf.convert_to_tensor(value, dtype=dtype)


def _damped(tensor, identity, damping):
    return tensor + convert_to_dtype(damping, tensor.dtype) * identity


def floor_damped_eigenvalues(eigenvalues, damping):
    """`max(max(λ, 0) + d, floor)` with `floor = max(eps·max|λ|, tiny)`.

    The damped eigenvalues whose negative powers are taken. Eigenvalues of a PSD
    matrix are clipped at 0 (rounding makes tiny ones negative), and the damped
    ones at `floor` (`eps` the machine epsilon, `tiny` the smallest normal number
    of the dtype): below it an eigenvalue is rounding noise, and the floor keeps
    `(λ + d)^e` finite for `e < 0` even with `d = 0` and a singular matrix.

    Args:
      eigenvalues: `[n]` Tensor (float32 or float64).
      damping: scalar `d >= 0` (Python number or Tensor), cast to the dtype.

    Returns:
      `[n]` Tensor of positive damped eigenvalues.
    """
    eigenvalues = tf.convert_to_tensor(eigenvalues)
    finfo = np.finfo(eigenvalues.dtype.as_numpy_dtype)
    damped = tf.maximum(eigenvalues, 0.0) + convert_to_dtype(damping, eigenvalues.dtype)
    floor = tf.maximum(
        float(finfo.eps) * tf.reduce_max(tf.abs(eigenvalues)), float(finfo.tiny)
    )
    return tf.maximum(damped, floor)


def clipped_eig_inverse(matrix, damping):
    """`V diag(1 / max(λ_clipped + d, floor)) Vᵀ` for `eigh((M + Mᵀ)/2) = V diag(λ) Vᵀ`.

    The inverse of `M + d·I` computed from the eigendecomposition of `M`, with
    the damped eigenvalues of `floor_damped_eigenvalues` (clipped at 0, floored
    at `max(eps·max|λ|, tiny)`), so the result is finite even for `d = 0` and a
    singular `M`.

    Args:
      matrix: `[n, n]` symmetric PSD Tensor (float32 or float64).
      damping: scalar (Python number or Tensor), cast to `matrix.dtype`.

    Returns:
      `[n, n]` Tensor, the (clipped) inverse of `M + d·I`.
    """
    _check_square(matrix, "matrix", "clipped_eig_inverse")
    symmetric = (matrix + tf.transpose(matrix)) / 2.0
    eigenvalues, eigenvectors = tf.linalg.eigh(symmetric)
    damped = floor_damped_eigenvalues(eigenvalues, damping)
    return tf.matmul(eigenvectors / damped, eigenvectors, transpose_b=True)


def _finite_or_clipped_eig_inverse(inverse, matrix, damping):
    """`inverse` if all its entries are finite, else `clipped_eig_inverse(M, d)`.

    The eigendecomposition only runs when needed (a `tf.cond`).
    """
    result = tf.cond(
        tf.reduce_all(tf.is_finite(inverse)),
        lambda: tf.identity(inverse),
        lambda: clipped_eig_inverse(matrix, damping),
    )
    # Control flow may forget the static shape; both branches have it.
    result.set_shape(matrix.shape)
    return result


def damped_posdef_inverse(matrix, damping, name=None):
    """Robust `(M + d·I)⁻¹` for a symmetric PSD `M`: Cholesky, else clipped eig.

    Computes the Cholesky factor `L` of `M + d·I` and `(L Lᵀ)⁻¹` by a Cholesky
    solve against `I`. On CPU, TensorFlow fills `L` with NaNs when the matrix is
    not numerically positive definite (e.g. a rank-deficient `M` with a tiny
    `d`); when the result has any non-finite entry, a `tf.cond` switches to
    `clipped_eig_inverse(M, d)`, which is always finite. The eigendecomposition
    only runs in that case. Works in graph mode with control flow v1 and v2.

    Args:
      matrix: `[n, n]` symmetric PSD Tensor with static `n`.
      damping: scalar `d >= 0` (Python number or Tensor), cast to the dtype.
      name: optional name scope (default `"damped_posdef_inverse"`).

    Returns:
      `[n, n]` Tensor, the inverse of `M + d·I`.
    """
    with tf.name_scope(name, "damped_posdef_inverse", [matrix, damping]):
        matrix = tf.convert_to_tensor(matrix)
        _check_square(matrix, "matrix", "damped_posdef_inverse")
        damping = convert_to_dtype(damping, matrix.dtype)
        size = matrix.shape.as_list()[0]
        if size is None:
            size = tf.shape(matrix)[0]
        identity = tf.eye(size, dtype=matrix.dtype)
        chol = tf.linalg.cholesky(_damped(matrix, identity, damping))
        chol_inverse = tf.linalg.cholesky_solve(chol, identity)
        return _finite_or_clipped_eig_inverse(chol_inverse, matrix, damping)


def posdef_inv_matrix_inverse(tensor, identity, damping):
    """`inv(M + d·I)` by a general (LU) matrix inverse.

    Port improvement: `tf.linalg.inv` raises a run-time InvalidArgumentError
    ("Input is not invertible") for a singular matrix, e.g. a rank-deficient
    factor with zero damping. The LU inverse is therefore only computed when a
    Cholesky factorisation shows `M + d·I` to be numerically positive definite
    (on CPU it returns NaNs otherwise, never raises); in the other case, or
    when the LU result is not finite, the clipped eigendecomposition inverse
    (`clipped_eig_inverse`) is returned.
    """
    tensor = tf.convert_to_tensor(tensor)
    damped = _damped(tensor, identity, damping)
    is_posdef = tf.reduce_all(tf.is_finite(tf.linalg.cholesky(damped)))
    inverse = tf.cond(
        is_posdef,
        lambda: tf.linalg.inv(damped),
        lambda: clipped_eig_inverse(tensor, damping),
    )
    return _finite_or_clipped_eig_inverse(inverse, tensor, damping)


def posdef_inv_cholesky(tensor, identity, damping):
    """`(M + d·I)⁻¹` by Cholesky factorisation and a Cholesky solve against `I`.

    Port improvement: when the Cholesky result is not finite (the damped
    matrix is not numerically positive definite), falls back to the clipped
    eigendecomposition inverse (`damped_posdef_inverse`), instead of NaNs.
    `identity` must be the identity of `tensor`'s size (kept for the original
    signature; the robust helper builds its own).
    """
    del identity  # damped_posdef_inverse builds the identity it needs.
    return damped_posdef_inverse(tensor, damping)


def posdef_inv_eig(tensor, identity, damping):
    """`V diag(1/λ) Vᵀ` where `M + d·I = V diag(λ) Vᵀ`.

    Port improvement: the eigenvalues of `M` are clipped at 0 and the damped
    ones at a tiny positive floor (`clipped_eig_inverse`), so rounding that
    makes `M` slightly indefinite cannot produce huge or negative inverses.
    """
    del identity  # The damping is added to the eigenvalues directly.
    return clipped_eig_inverse(tensor, damping)


def posdef_eig_self_adjoint(mat):
    """Symmetric eigendecomposition `mat = V diag(λ) Vᵀ`, returns `(|λ|, V)`.

    Eigenvalues are replaced by their absolute values (they are ≥ 0 for a PSD
    `mat` up to rounding); this matches `posdef_eig_svd` on PSD matrices.
    """
    eigenvalues, eigenvectors = tf.linalg.eigh(mat)
    return tf.abs(eigenvalues), eigenvectors


def posdef_eig_svd(mat):
    """SVD `mat = U diag(s) Vᵀ`, returns `(s, U)` (eigenpairs of a PSD `mat`)."""
    singular_values, left_vectors, _ = tf.linalg.svd(mat)
    return singular_values, left_vectors


# The methods `posdef_inv` / `posdef_eig` choose from, by name.
POSDEF_INV_FUNCTIONS = {
    "matrix_inverse": posdef_inv_matrix_inverse,
    "cholesky": posdef_inv_cholesky,
    "eig": posdef_inv_eig,
}

POSDEF_EIG_FUNCTIONS = {
    "self_adjoint": posdef_eig_self_adjoint,
    "svd": posdef_eig_svd,
}


def posdef_inv(tensor, damping, method: str):
    """`(M + d·I)⁻¹` for a symmetric PSD `M` by `POSDEF_INV_FUNCTIONS[method]`.

    Args:
      tensor: `[n, n]` symmetric PSD Tensor.
      damping: scalar `d` (Python number or Tensor), cast to `tensor.dtype`.
      method: a key of `POSDEF_INV_FUNCTIONS` ("cholesky" never returns NaNs:
        see `damped_posdef_inverse`).

    Returns:
      `[n, n]` Tensor.
    """
    size = tensor.shape.as_list()[0]
    if size is None:
        size = tf.shape(tensor)[0]
    identity = tf.eye(size, dtype=tensor.dtype)
    damping = convert_to_dtype(damping, tensor.dtype)
    return POSDEF_INV_FUNCTIONS[method](tensor, identity, damping)


def posdef_eig(mat, method: str):
    """`(eigenvalues, eigenvectors)` of a symmetric PSD `mat`.

    By `POSDEF_EIG_FUNCTIONS[method]` ("self_adjoint" or "svd").
    """
    return POSDEF_EIG_FUNCTIONS[method](mat)
