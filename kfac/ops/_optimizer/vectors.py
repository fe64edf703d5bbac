"""Lists of parameter-shaped vectors, as the optimizer passes them around."""

from typing import Any
from typing import Sequence

import tensorflow.compat.v1 as tf


def dense(vector: Any) -> tf.Tensor:
    """`vector` as a dense Tensor (`IndexedSlices` from embeddings are scattered)."""
    if isinstance(vector, tf.IndexedSlices):
        return tf.convert_to_tensor(vector)
    return vector


def inner_product_list(list1: Sequence[Any], list2: Sequence[Any]) -> tf.Tensor:
    """`Σ_i ⟨a_i, b_i⟩` = `Σ_i reduce_sum(a_i ∘ b_i)` over two aligned lists."""
    return tf.add_n([tf.reduce_sum(dense(a) * dense(b)) for a, b in zip(list1, list2)])
