"""Statistics shared by every factor: initial values, second moments, placement.

The moving average itself is `moving_average.py`; the blocked symmetric products
are `second_moments.py`.
"""

import contextlib
from typing import Any
from typing import List
from typing import Optional

import tensorflow.compat.v1 as tf

from kfac.ops import _config
from kfac.ops._factors import second_moments


def static_size(shape, index: int) -> int:
    """`shape[index]` as a Python int (None when unknown)."""
    return tf.compat.dimension_value(tf.TensorShape(shape)[index])


def inverse_initializer(shape, dtype, partition_info=None):
    """Identity of size `shape[0]` (initial value of matrix-power variables)."""
    del partition_info  # Unused; part of the variable-initializer signature.
    return tf.eye(static_size(shape, 0), dtype=tf.as_dtype(dtype))


def initial_covariance(shape, dtype, at_zero: bool) -> tf.Tensor:
    """`[n, n]` identity (`n = shape[0]`), or zeros when `at_zero`."""
    size = static_size(shape, 0)
    if at_zero:
        return tf.zeros([size, size], dtype=tf.as_dtype(dtype))
    return tf.eye(size, dtype=tf.as_dtype(dtype))


def initial_diagonal(shape, dtype, at_zero: bool) -> tf.Tensor:
    """Ones of `shape`, or zeros when `at_zero`."""
    shape = tf.TensorShape(shape).as_list()
    if at_zero:
        return tf.zeros(shape, dtype=tf.as_dtype(dtype))
    return tf.ones(shape, dtype=tf.as_dtype(dtype))


def covariance_initializer(shape, dtype, partition_info=None):
    """Identity of size `shape[0]`, or zeros if `INIT_COVARIANCES_AT_ZERO`.

    The setting is that of the factor creating its variable (which scopes its
    configuration, `_config.building_with`), else the module constant now.
    """
    del partition_info  # Unused; part of the variable-initializer signature.
    at_zero = _config.current().init_covariances_at_zero
    return initial_covariance(shape, dtype, at_zero)


def diagonal_covariance_initializer(shape, dtype, partition_info):
    """Ones of `shape` (zeros if `INIT_COVARIANCES_AT_ZERO`, read as above)."""
    del partition_info  # Unused; part of the variable-initializer signature.
    at_zero = _config.current().init_covariances_at_zero
    return initial_diagonal(shape, dtype, at_zero)


@contextlib.contextmanager
def place_on_device(device: Optional[str]):
    """`tf.device(device)` when `device` is a non-empty string, else nothing."""
    if device:
        with tf.device(device):
            yield
    else:
        yield


def compute_cov(tensor, tensor_right=None, normalizer=None) -> tf.Tensor:
    """Second moment of the rows of a 2-D tensor.

    With `X = tensor` (`[n, k]`) and `N = normalizer` (default: the dynamic row
    count of `X`), returns the symmetrised `(XᵀX/N + (XᵀX/N)ᵀ)/2`; with
    `Y = tensor_right` (`[n, m]`), returns the cross moment `XᵀY/N` (not
    symmetrised). `N` is cast to the tensor dtype.
    """
    if tensor_right is None:
        # Blocked, upper triangle only; exactly symmetric (second_moments).
        return second_moments.symmetric_second_moment(tensor, normalizer)
    tensor = tf.convert_to_tensor(tensor)
    if normalizer is None:
        normalizer = tf.shape(tensor)[0]
    normalizer = tf.cast(normalizer, tensor.dtype)
    return tf.matmul(tensor, tensor_right, transpose_a=True) / normalizer


def append_homog(tensor) -> tf.Tensor:
    """Appends a column of ones on the last axis: `[..., k] → [..., k+1]`.

    The homogeneous coordinate turns a bias into one more input row of the
    weight matrix (Martens & Grosse 2015, §2.1).
    """
    tensor = tf.convert_to_tensor(tensor)
    ones_shape = tf.concat([tf.shape(tensor)[:-1], [1]], axis=0)
    return tf.concat([tensor, tf.ones(ones_shape, dtype=tensor.dtype)], axis=-1)


def flatten(nested) -> List[Any]:
    """Leaves of nested lists/tuples, in order (PartitionedTensors are leaves)."""
    if isinstance(nested, (tuple, list)):
        return [leaf for item in nested for leaf in flatten(item)]
    return [nested]
