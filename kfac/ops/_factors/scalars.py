"""Numbers as Tensors of a factor's dtype."""

import tensorflow.compat.v1 as tf

from kfac.ops._factors import naming


def cast_scalar(value, dtype) -> tf.Tensor:
    """`value` (Python/numpy number, Tensor or Variable) as a Tensor of `dtype`.

    Python numbers become constants of `dtype` directly (`tf.cast(0.1,
    tf.float64)` would first round 0.1 to float32).
    """
    if isinstance(value, naming.TENSOR_LIKE_TYPES):
        return tf.cast(value, dtype)
    return tf.constant(value, dtype=dtype)
