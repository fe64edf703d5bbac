"""Products with matrices held as `tf.IndexedSlices` (embedding gradients)."""

import tensorflow.compat.v1 as tf


def _check_sparse_matrix(matrix, arg_name: str, func_name: str):
    if not isinstance(matrix, tf.IndexedSlices):
        raise ValueError(
            "%s: %s must be an IndexedSlices representing a matrix, got %s."
            % (func_name, arg_name, type(matrix).__name__)
        )
    if matrix.indices.shape.ndims != 1 or matrix.values.shape.ndims != 2:
        raise ValueError(
            "%s: %s must represent a matrix (1-D indices, 2-D values), got "
            "indices of shape %s and values of shape %s."
            % (func_name, arg_name, matrix.indices.shape, matrix.values.shape)
        )


def _dense_shape_tensor(matrix):
    """`matrix.dense_shape` as an integer Tensor (it may be a list), or None.

    `tf.IndexedSlices` accepts a Python list or tuple as its `dense_shape`,
    and the original's products did too.
    """
    if matrix.dense_shape is None:
        return None
    return tf.convert_to_tensor(matrix.dense_shape, dtype_hint=tf.int64)


def matmul_sparse_dense(A, B, name=None):  # noqa: N803 (names of the original)
    """`A @ B` for a sparse-row matrix `A` and a dense `B`.

    Args:
      A: `IndexedSlices` for an `[m, n]` matrix: rows `A.indices` hold
        `A.values` (`[k, n]`), all other rows are zero.
      B: rank-2 Tensor `[n, p]`.
      name: optional name scope (default `"matmul_sparse_dense"`).

    Returns:
      `IndexedSlices(A.values @ B, A.indices, dense_shape=[m, p])`.
    """
    with tf.name_scope(name, "matmul_sparse_dense", [A, B]):
        _check_sparse_matrix(A, "A", "matmul_sparse_dense")
        B = tf.convert_to_tensor(B)
        if B.shape.ndims != 2:
            raise ValueError(
                "matmul_sparse_dense: B must be a rank-2 Tensor, got shape %s."
                % (B.shape,)
            )
        new_values = tf.matmul(A.values, B)
        dense_shape = _dense_shape_tensor(A)
        if dense_shape is not None:
            num_cols = B.shape.as_list()[1]
            if num_cols is None:
                num_cols = tf.shape(B, out_type=dense_shape.dtype)[1]
            dense_shape = tf.stack(
                [dense_shape[0], tf.cast(num_cols, dense_shape.dtype)]
            )
        return tf.IndexedSlices(new_values, A.indices, dense_shape=dense_shape)


def matmul_diag_sparse(A_diag, B, name=None):  # noqa: N803
    """`diag(A_diag) @ B` for a sparse-row matrix `B`.

    Args:
      A_diag: rank-1 Tensor `[m]`, the diagonal of an `[m, m]` matrix.
      B: `IndexedSlices` for an `[m, n]` matrix.
      name: optional name scope (default `"matmul_diag_sparse"`).

    Returns:
      `IndexedSlices(A_diag[B.indices][:, None] * B.values, B.indices,
      B.dense_shape)`.
    """
    with tf.name_scope(name, "matmul_diag_sparse", [A_diag, B]):
        A_diag = tf.convert_to_tensor(A_diag)
        if A_diag.shape.ndims != 1:
            raise ValueError(
                "matmul_diag_sparse: A_diag must be a rank-1 Tensor, got shape %s."
                % (A_diag.shape,)
            )
        _check_sparse_matrix(B, "B", "matmul_diag_sparse")
        row_scales = tf.gather(A_diag, B.indices)[:, None]
        return tf.IndexedSlices(
            row_scales * B.values, B.indices, dense_shape=_dense_shape_tensor(B)
        )
