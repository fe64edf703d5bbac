"""Small tensor helpers shared by the loss families (indices, replicated columns)."""

from typing import Sequence

import numpy as np
import tensorflow.compat.v1 as tf


class _ContractAssertionError(AssertionError, ValueError):
    """Bad argument where the original used `assert` (caught as either type)."""


def _as_tensor(value, dtype=None):
    """`value` itself if it is a Tensor/Variable, else a constant (numpy, lists).

    Tensors are returned unchanged so that `inputs` keeps the identity of the
    tensor the user registered (layer collections key on it). A non-tensor is
    converted with `dtype` when given (e.g. a float64 numpy vector multiplied
    with float32 logits).
    """
    if isinstance(value, (tf.Tensor, tf.Variable)) or tf.is_tensor(value):
        return value
    if dtype is not None:
        return tf.constant(np.asarray(value), dtype=dtype)
    return tf.convert_to_tensor(np.asarray(value))


def _case_weights(weights, data: tf.Tensor):
    """Per-case `weights` as a Tensor of `data`'s dtype (bools become 0/1), or None.

    A case is one row of the leading axes of `data` (all but its last). The
    weights have those leading dims or a prefix of them (`[batch]` for
    `[batch, T, C]` data); their values are not checked here: the
    `register_*_predictive_distribution` methods check them
    (`_registration/weights.py`) before they reach a loss.

    Raises:
      ValueError: `data` has no static rank, or `weights` has more axes than
        the leading axes of `data`.
    """
    if weights is None:
        return None
    dtype = data.dtype.base_dtype
    if not (isinstance(weights, (tf.Tensor, tf.Variable)) or tf.is_tensor(weights)):
        # Straight to the data's dtype: no float32 rounding of float64 weights.
        weights = np.asarray(weights).astype(dtype.as_numpy_dtype)
    weights = tf.convert_to_tensor(weights)
    if weights.dtype.base_dtype != dtype:
        weights = tf.cast(weights, dtype)
    if data.shape.rank is None or weights.shape.rank is None:
        raise ValueError("weights and the loss's inputs need a static rank.")
    if weights.shape.rank > data.shape.rank - 1:
        raise ValueError(
            "weights of shape {} have more axes than the leading (case) axes of "
            "inputs of shape {}.".format(weights.shape, data.shape)
        )
    return weights


def _expand_cases(scale: tf.Tensor, rank: int) -> tf.Tensor:
    """`scale` with unit axes appended up to `rank`: shapes aligned on the left.

    Multiplying by the result scales every case (row of the leading axes that
    `scale` covers) of a tensor of that rank, or of a tensor with extra leading
    axes when `rank` is the rank of the inputs.
    """
    for _ in range(rank - scale.shape.rank):
        scale = scale[..., tf.newaxis]
    return scale


def _check_index(index: Sequence[int], depth) -> int:
    """The single entry of `index`, checked against a last axis of size `depth`.

    Raises:
      AssertionError (also a ValueError): if `len(index) != 1`, as the original.
      ValueError: if the entry is outside `[0, depth)` (when `depth` is static).
    """
    if len(index) != 1:
        raise _ContractAssertionError(
            "Length of index was {}, expected 1 (one entry per non-batch axis of "
            "the factor's inner shape).".format(len(index))
        )
    position = index[0]
    if isinstance(depth, int) and not 0 <= position < depth:
        raise ValueError(
            "index[0] must be in [0, {}) for a last axis of size {}, got {}.".format(
                depth, depth, position
            )
        )
    return position


def _replicated_column(column: tf.Tensor, index: int, depth, dtype) -> tf.Tensor:
    """`column[..., None]` placed at `index` of a zero last axis of length `depth`.

    `column` has the batch shape (last axis removed). Equivalent to
    `insert_slice_in_zeros(column[..., None], -1, depth, index)`, but also works
    when `depth` is only known at run time.
    """
    return column[..., tf.newaxis] * tf.one_hot(index, depth, dtype=dtype)


def _last_dim(tensor: tf.Tensor):
    """Static size of the last axis as a Python int, else a scalar tensor."""
    size = tf.compat.dimension_value(tensor.shape[-1])
    return int(size) if size is not None else tf.shape(tensor)[-1]


def insert_slice_in_zeros(
    slice_to_insert: tf.Tensor, dim: int, dim_size: int, position: int
) -> tf.Tensor:
    """Pads a size-1 axis with zeros so that the slice sits at `position`.

    Example: `[[[1, 2]], [[3, 4]]]`, `dim=1`, `dim_size=2`, `position=0` gives
    `[[[1, 2], [0, 0]], [[3, 4], [0, 0]]]`.

    Args:
      slice_to_insert: tensor whose size along `dim` is 1 (static rank needed).
      dim: the axis to pad (negative values count from the end).
      dim_size: length of that axis in the result.
      position: index of the slice along that axis, `0 <= position < dim_size`.

    Returns:
      Tensor shaped like `slice_to_insert` except `dim_size` along `dim`.

    Raises:
      ValueError: if `slice_to_insert.shape[dim] != 1` or `position` is out of
        range.
    """
    slice_to_insert = _as_tensor(slice_to_insert)
    slice_shape = slice_to_insert.shape
    if slice_shape.rank is None:
        raise ValueError("slice_to_insert must have a static rank.")
    if tf.compat.dimension_value(slice_shape[dim]) != 1:
        raise ValueError(
            "Expected slice_to_insert.shape[{}] to be 1, but the shape was {}.".format(
                dim, slice_shape
            )
        )
    if not 0 <= position < dim_size:
        raise ValueError(
            "position must be in [0, dim_size={}), got {}.".format(dim_size, position)
        )
    paddings = [[0, 0] for _ in range(slice_shape.rank)]
    paddings[dim] = [position, dim_size - position - 1]
    return tf.pad(slice_to_insert, paddings)


# ---------------------------------------------------------------------------
# Abstract classes.
