"""Random subsets of examples and rows for cheaper factor statistics.

A mean over a uniformly drawn subset (without replacement) is an unbiased
estimate of the mean over all rows, so a factor's second moment computed on
a subset estimates the full one at a fraction of the cost: for a
convolution's input factor, `O(m·d²)` instead of `O(B·T·d²)`.
"""

import math

import tensorflow.compat.v1 as tf


def sample_indices(total, num_indices):
    """`min(num_indices, total)` distinct ints of `[0, total)`, drawn
    uniformly at random (`total` a Python int or a scalar Tensor)."""
    return tf.random.shuffle(tf.range(total))[:num_indices]


def sample_rows(rows, num_rows):
    """`(rows[indices], indices)` for `min(num_rows, N)` distinct row indices
    drawn uniformly at random from the `N` rows of `rows` (axis 0)."""
    rows = tf.convert_to_tensor(rows)
    indices = sample_indices(tf.shape(rows)[0], num_rows)
    return tf.gather(rows, indices), indices


def num_sampled(total, fraction):
    """`max(1, ceil(fraction · total))` for a static int or a scalar Tensor."""
    if isinstance(total, int):
        return max(1, int(math.ceil(fraction * total)))
    count = tf.math.ceil(fraction * tf.cast(total, tf.float64))
    return tf.maximum(1, tf.cast(count, tf.int32))


def sample_examples(inputs, fraction):
    """`(inputs[indices], indices)`: `num_sampled(B, fraction)` of the `B`
    examples of `inputs` (axis 0), drawn uniformly without replacement."""
    inputs = tf.convert_to_tensor(inputs)
    batch = tf.compat.dimension_value(inputs.shape[0])
    if batch is None:
        batch = tf.shape(inputs)[0]
    return sample_rows(inputs, num_sampled(batch, fraction))
