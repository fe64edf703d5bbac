"""The statistic of every dense Kronecker factor: the second moment `ãᵀã / N`.

`ã` is a `[N, n]` matrix of rows (layer inputs, patches or output gradients),
optionally with a column of ones appended for the bias (Martens & Grosse 2015,
§2.1 and §5). The product is symmetric, so only the blocks on and above the
diagonal are multiplied: with the columns split in `k` groups, `k(k+1)/2` of
the `k²` blocks, i.e. `(k+1)/2k` of the dense product's work (3/4 for `k = 2`,
2/3 for `k = 3`); the blocks below are transposed copies, and only the small
diagonal blocks are symmetrised, so the result is exactly symmetric without a
transpose of the whole matrix. The ones column is never materialised: the
bias row and column of `[X, 1]ᵀ[X, 1] / N` are the column means of `X` and
the corner is `N_rows / N`. `symmetric_outer_product` applies the same
blocking to `M Mᵀ` (matrix powers formed from an eigendecomposition).
"""

from typing import Any
from typing import List
from typing import Optional

import tensorflow.compat.v1 as tf

# Column groups of about this size are multiplied separately (measured on
# 2-core CPUs: smaller blocks lose more to op overhead than they save); at
# most MAX_BLOCKS groups, so the graph stays small for wide layers.
BLOCK_SIZE = 320
MAX_BLOCKS = 4


def num_column_blocks(size: Optional[int]) -> int:
    """How many column groups a `size`-column matrix is split into (1 if unknown)."""
    if size is None:
        return 1
    return min(MAX_BLOCKS, max(1, size // BLOCK_SIZE))


def _concat(parts: List[tf.Tensor], axis: int) -> tf.Tensor:
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=axis)


def _symmetric_blocks(count: int, product, scale=None) -> List[List[tf.Tensor]]:
    """The `count × count` blocks of the symmetric matrix `scale · P` whose block
    `(i, j)` is `P_ij = product(i, j)`: computed for `j ≥ i` only.

    A product `XᵀX` is symmetric only up to rounding, so diagonal blocks are
    symmetrised, `(P_ii + P_iiᵀ)·scale/2`: one multiplication does both (a
    scalar `scale` of None means 1).
    """
    half = 0.5 if scale is None else 0.5 * scale
    upper = {}
    for i in range(count):
        for j in range(i, count):
            block = product(i, j)
            if i == j:
                upper[i, j] = (block + tf.transpose(block)) * half
            else:
                upper[i, j] = block if scale is None else block * scale
    return [
        [upper[i, j] if j >= i else tf.transpose(upper[j, i]) for j in range(count)]
        for i in range(count)
    ]


def symmetric_outer_product(matrix: Any) -> tf.Tensor:
    """`M Mᵀ` for a `[n, m]` matrix, from the upper blocks only.

    Used for matrix functions from an eigendecomposition, `V diag(p) Vᵀ =
    (V √p)(V √p)ᵀ` for `p > 0`. With one row group (small `n`) it is a single
    product (a symmetrisation would cost more than it saves); otherwise the
    result is exactly symmetric.
    """
    matrix = tf.convert_to_tensor(matrix)
    size = tf.compat.dimension_value(matrix.shape[0])
    count = num_column_blocks(size)
    if count == 1:
        return tf.matmul(matrix, matrix, transpose_b=True)
    bounds = [size * index // count for index in range(count + 1)]
    pieces = [matrix[bounds[i] : bounds[i + 1]] for i in range(count)]
    block_rows = _symmetric_blocks(
        count, lambda i, j: tf.matmul(pieces[i], pieces[j], transpose_b=True)
    )
    return _concat([_concat(block_row, axis=1) for block_row in block_rows], axis=0)


def symmetric_second_moment(
    rows: Any, normalizer: Any = None, append_ones: bool = False, row_scale: Any = None
) -> tf.Tensor:
    """`ãᵀ diag(s²) ã / N`, exactly symmetric; `ã = [rows, 1]` when `append_ones`.

    Args:
      rows: `[N_rows, n]` Tensor (or anything convertible, e.g. a
        PartitionedTensor).
      normalizer: `N` (number or scalar Tensor, cast to the dtype of `rows`);
        default the dynamic row count `N_rows`.
      append_ones: add a homogeneous coordinate: the result is `[n+1, n+1]`
        with last column `Σ_rows s² x / N` and corner `Σ_rows s² / N`.
      row_scale: `s`, a `[N_rows]` scale of every row (the square root of a
        row weight, or a 0/1 mask), or None for ones.

    Returns:
      The `[n (+1), n (+1)]` second moment in the dtype of `rows`.
    """
    rows = tf.convert_to_tensor(rows)
    if row_scale is not None:
        rows = rows * row_scale[:, None]
    dtype = rows.dtype.base_dtype
    num_rows = tf.shape(rows)[0]
    normalizer = tf.cast(num_rows if normalizer is None else normalizer, dtype)
    # One scalar division; the matrices are multiplied by its result.
    scale = 1.0 / normalizer
    size = tf.compat.dimension_value(rows.shape[-1])
    count = num_column_blocks(size)
    if count == 1:
        bounds = [0, size]
        columns = [rows]
    else:
        bounds = [size * index // count for index in range(count + 1)]
        columns = [rows[:, bounds[i] : bounds[i + 1]] for i in range(count)]

    block_rows = _symmetric_blocks(
        count,
        lambda i, j: tf.matmul(columns[i], columns[j], transpose_a=True),
        scale,
    )
    if append_ones:
        if row_scale is None:
            means = tf.reduce_sum(rows, axis=0) * scale  # [n]
            corner = tf.reshape(tf.cast(num_rows, dtype) / normalizer, [1, 1])
        else:
            # The homogeneous coordinate of a scaled row is `s` itself.
            means = tf.reshape(tf.matmul(row_scale[None, :], rows), [-1]) * scale
            corner = tf.reshape(tf.reduce_sum(tf.square(row_scale)) * scale, [1, 1])
        for i, block_row in enumerate(block_rows):
            if count == 1:
                block_row.append(tf.expand_dims(means, 1))
            else:
                block_row.append(tf.expand_dims(means[bounds[i] : bounds[i + 1]], 1))
        block_rows.append([tf.expand_dims(means, 0), corner])
    return _concat([_concat(block_row, axis=1) for block_row in block_rows], axis=0)
