"""Reshaping between layer-parameter formats, columns and "mat2d" form.

mat2d form (API.md §1): the weights reshaped to `[prod(leading dims), out]`,
with the bias appended as one extra last row when the parameters are a
`(weights, bias)` tuple/list, so `[in + 1, out]`.
"""

from typing import Sequence
from typing import Union

import numpy as np
import tensorflow.compat.v1 as tf


def _shape_for_reshape(template):
    """Static shape of `template` when fully known, else its dynamic shape."""
    if template.shape.is_fully_defined():
        return template.shape.as_list()
    return tf.shape(template)


def tensors_to_column(tensors):
    """Flattens a Tensor, or a list/tuple of Tensors, into one column.

    Args:
        tensors: a Tensor, or a list/tuple of Tensors (concatenated in order).

    Returns:
        A `[n, 1]` Tensor, `n` the total number of entries.
    """
    if isinstance(tensors, (tuple, list)):
        return tf.concat([tf.reshape(tensor, [-1, 1]) for tensor in tensors], axis=0)
    return tf.reshape(tensors, [-1, 1])


def column_to_tensors(tensors_template, colvec):
    """Inverse of `tensors_to_column`, using the templates' static shapes.

    Args:
        tensors_template: a Tensor, or a list/tuple of Tensors with static shapes.
        colvec: a `[n, 1]` (or `[n]`) Tensor with as many entries as the templates.

    Returns:
        A Tensor shaped like `tensors_template`, or a tuple of Tensors shaped like
        its elements (consecutive slices of `colvec`).
    """
    with tf.name_scope("column_to_tensors"):
        if not isinstance(tensors_template, (tuple, list)):
            return tf.reshape(colvec, tensors_template.shape)
        offset = 0
        tensors = []
        for template in tensors_template:
            if not template.shape.is_fully_defined():
                raise ValueError(
                    "column_to_tensors: tensors_template entries need a fully defined "
                    "static shape, got %s for %s." % (template.shape, template)
                )
            size = int(np.prod(template.shape.as_list(), dtype=np.int64))
            tensors.append(tf.reshape(colvec[offset : offset + size], template.shape))
            offset += size
        return tuple(tensors)


def kronecker_product(mat1, mat2):
    """Dense Kronecker product `mat1 ⊗ mat2` (equal to `np.kron`).

    Args:
        mat1: rank-2 Tensor `[m1, n1]` with static shape.
        mat2: rank-2 Tensor `[m2, n2]` with static shape.

    Returns:
        A `[m1·m2, n1·n2]` Tensor whose block `(i, j)` is `mat1[i, j] · mat2`.
    """
    for arg_name, mat in (("mat1", mat1), ("mat2", mat2)):
        if mat.shape.ndims != 2 or not mat.shape.is_fully_defined():
            raise ValueError(
                "kronecker_product: %s must be a rank-2 Tensor with a static shape, "
                "got shape %s." % (arg_name, mat.shape)
            )
    m1, n1 = mat1.shape.as_list()
    m2, n2 = mat2.shape.as_list()
    # Broadcasting [m1, 1, n1, 1] * [1, m2, 1, n2] puts entry (i, k, j, l) at row
    # i·m2 + k, column j·n2 + l after the reshape: the Kronecker layout.
    product = tf.reshape(mat1, [m1, 1, n1, 1]) * tf.reshape(mat2, [1, m2, 1, n2])
    return tf.reshape(product, [m1 * m2, n1 * n2])


def layer_params_to_mat2d(
    vector: Union[tf.Tensor, Sequence[tf.Tensor], tf.IndexedSlices],
):
    """Converts a layer-parameter-shaped vector into mat2d form.

    Args:
        vector: a Tensor shaped like the weights `[..., out]`; a 2-tuple/list
            `(w, b)` (bias appended as the last row); or an `IndexedSlices`
            (returned unchanged).

    Returns:
        `[prod(leading dims) (+1 with bias), out]` Tensor, or the IndexedSlices.
    """
    if isinstance(vector, (tuple, list)):
        if len(vector) != 2:
            raise ValueError(
                "layer_params_to_mat2d: a tuple/list vector must be (weights, bias), "
                "got %d elements." % len(vector)
            )
        w_part, b_part = vector
        w_mat = tf.reshape(w_part, [-1, w_part.shape.as_list()[-1]])
        return tf.concat([w_mat, tf.reshape(b_part, [1, -1])], axis=0)
    if isinstance(vector, tf.IndexedSlices):
        return vector
    return tf.reshape(vector, [-1, vector.shape.as_list()[-1]])


def mat2d_to_layer_params(vector_template, mat2d):
    """Inverse of `layer_params_to_mat2d`, shaped like `vector_template`.

    Port fix (API.md §12): the bias is reshaped to the template bias' shape (the
    original always returned `[out]`; identical for `[out]` biases).

    Args:
        vector_template: Tensor, `(w, b)` tuple/list, or IndexedSlices template.
        mat2d: the mat2d-form Tensor (an IndexedSlices for an IndexedSlices
            template).

    Returns:
        A Tensor, a `(w, b)` tuple, or the IndexedSlices `mat2d`.

    Raises:
        TypeError: the template is an IndexedSlices but `mat2d` is not.
    """
    if isinstance(vector_template, (tuple, list)):
        if len(vector_template) != 2:
            raise ValueError(
                "mat2d_to_layer_params: a tuple/list vector_template must be "
                "(weights, bias), got %d elements." % len(vector_template)
            )
        w_template, b_template = vector_template
        w_part = tf.reshape(mat2d[:-1], _shape_for_reshape(w_template))
        b_part = tf.reshape(mat2d[-1], _shape_for_reshape(b_template))
        return w_part, b_part
    if isinstance(vector_template, tf.IndexedSlices):
        if not isinstance(mat2d, tf.IndexedSlices):
            raise TypeError(
                "mat2d_to_layer_params: vector_template is an IndexedSlices, so mat2d "
                "must be one too, got %s." % type(mat2d).__name__
            )
        return mat2d
    return tf.reshape(mat2d, _shape_for_reshape(vector_template))
