"""Lists of parameter-shaped vectors, as the optimizer passes them around."""

from typing import Any
from typing import Sequence

import tensorflow.compat.v1 as tf


def dense(vector: Any) -> tf.Tensor:
    """`vector` as a dense Tensor (`IndexedSlices` from embeddings are scattered)."""
    if isinstance(vector, tf.IndexedSlices):
        return tf.convert_to_tensor(vector)
    return vector


def inner_product(a: Any, b: Any) -> tf.Tensor:
    """`⟨a, b⟩`: `reduce_sum(a ∘ b)`, or `2·l2_loss(a)` (no temporary) when
    `b` is `a`. Built the same way everywhere, so that grappler merges the
    products the quadratic model and the step statistics both take."""
    if b is a:
        return 2.0 * tf.nn.l2_loss(dense(a))
    return tf.reduce_sum(dense(a) * dense(b))


def inner_product_list(list1: Sequence[Any], list2: Sequence[Any]) -> tf.Tensor:
    """`Σ_i ⟨a_i, b_i⟩` over two aligned lists (`inner_product`)."""
    return tf.add_n([inner_product(a, b) for a, b in zip(list1, list2)])
