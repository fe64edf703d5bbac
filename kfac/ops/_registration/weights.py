"""Per-example (or per-position) weights and masks handed to a registration.

Layers and losses accept `weights` (and layers also `mask`): one non-negative
number per example or position, e.g. `tf.sequence_mask(lengths, T)` for a
padded `[batch, T, ...]` batch. They arrive as bool, int or float Tensors or
arrays and are checked once, here, where the user hands them over:

* shape: the leading dims of the data they weight (all but its last axis), or
  a prefix of them (`[batch]` for `[batch, T, n]` data): the missing trailing
  dims broadcast, i.e. shapes are aligned on the *left*, unlike numpy;
* values: finite and non-negative, statically for constants (ValueError) and
  at run time for other tensors (an `InvalidArgumentError` naming the
  registration and the argument when an op reading them runs).

The result is a Tensor of the data's dtype and of exactly its leading shape,
so factors can flatten it in the order they flatten the data's rows.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops._registration.shapes import describe
from kfac.ops._registration.shapes import error
from kfac.ops._registration.shapes import static_shape


def _constant_value(weights):
    """The value of `weights` as a numpy array when it is known now, else None."""
    if isinstance(weights, (np.ndarray, np.generic, int, float, bool, list, tuple)):
        return np.asarray(weights)
    if isinstance(weights, tf.Tensor):
        return tf.get_static_value(weights)
    return None


def _check_values(method: str, argument: str, value: np.ndarray) -> None:
    if value.dtype == np.bool_:
        return
    if not np.issubdtype(value.dtype, np.number):
        raise error(
            method,
            "`{}` must hold numbers or booleans; got dtype {}.".format(
                argument, value.dtype
            ),
        )
    if not np.all(np.isfinite(value)):
        raise error(method, "`{}` has a NaN or infinite entry.".format(argument))
    if np.any(value < 0):
        raise error(
            method,
            "`{}` must be non-negative; got a minimum of {!r}.".format(
                argument, float(np.min(value))
            ),
        )


def _check_shape(method, argument, weights_shape, leading_shape, data_name) -> None:
    if weights_shape.rank is None or leading_shape.rank is None:
        return
    rank = weights_shape.rank
    prefix = leading_shape[:rank] if rank <= leading_shape.rank else None
    if prefix is None or not prefix.is_compatible_with(weights_shape):
        expected = "{} or a prefix of it".format(describe(leading_shape))
        raise error(
            method,
            "`{}` has shape {} but `{}` has leading dims {}: expected {}.".format(
                argument,
                describe(weights_shape),
                data_name,
                describe(leading_shape),
                expected,
            ),
        )


def _run_time_check(method: str, argument: str, weights: tf.Tensor) -> tf.Tensor:
    """`weights`, read through an assertion that they are finite and >= 0."""
    valid = tf.reduce_all(tf.logical_and(tf.math.is_finite(weights), weights >= 0))
    message = "{}: `{}` must be finite and non-negative.".format(method, argument)
    assertion = tf.debugging.Assert(valid, [message, tf.reduce_min(weights)])
    with tf.control_dependencies([assertion]):
        return tf.identity(weights)


def broadcast_weights(
    method: str, argument: str, weights, data, data_name: str, dtype=None
):
    """`weights` checked and broadcast to the leading shape of `data`.

    Args:
      method: the registration ("register_fully_connected"), for messages.
      argument: the argument's name ("weights", "mask").
      weights: None, or bool/int/float values of shape `leading` or a prefix
        of it, where `leading` is the shape of `data` without its last axis.
      data: the tensor whose rows are weighted, `[..., n]`.
      data_name: its argument name, for messages.
      dtype: the result's dtype when not `data`'s (integer ids).

    Returns:
      None for None; else a Tensor of `data`'s dtype (or `dtype`) and shape
      `leading`.

    Raises:
      ValueError: a shape that is not a prefix of `leading`, or constant values
        that are negative, NaN or infinite.
    """
    if weights is None:
        return None
    data = tf.convert_to_tensor(data)
    leading_shape = data.shape[:-1] if data.shape.rank is not None else data.shape
    constant = _constant_value(weights)
    if constant is not None:
        _check_values(method, argument, constant)
        _check_shape(
            method, argument, tf.TensorShape(constant.shape), leading_shape, data_name
        )
    else:
        _check_shape(method, argument, static_shape(weights), leading_shape, data_name)
    dtype = data.dtype.base_dtype if dtype is None else tf.as_dtype(dtype)
    weights = tf.convert_to_tensor(weights)
    if weights.dtype.base_dtype != dtype:
        weights = tf.cast(weights, dtype)
    if constant is None:
        weights = _run_time_check(method, argument, weights)
    data_rank = data.shape.rank
    weights_rank = weights.shape.rank
    if data_rank is None or weights_rank is None:
        raise error(
            method,
            "`{}` and `{}` need a static rank.".format(argument, data_name),
        )
    trailing = [1] * (data_rank - 1 - weights_rank)
    if trailing:
        weights = tf.reshape(weights, tf.concat([tf.shape(weights), trailing], 0))
    leading = tf.shape(data)[:-1]
    weights = tf.broadcast_to(weights, leading)
    weights.set_shape(leading_shape)
    return weights


def combine_mask_and_weights(method: str, mask, weights, data, data_name: str):
    """`mask ∘ weights` (either may be None) broadcast to `data`'s leading dims."""
    return product(
        broadcast_weights(method, "mask", mask, data, data_name),
        broadcast_weights(method, "weights", weights, data, data_name),
    )


def product(mask, weights):
    """`mask ∘ weights` of checked values, either None (then the other), both
    Tensors or both lists over uses of Tensors."""
    if mask is None:
        return weights
    if weights is None:
        return mask
    if isinstance(mask, list):
        return [m * w for m, w in zip(mask, weights)]
    return mask * weights
