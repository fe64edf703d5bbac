"""Shared helpers for the fisher_blocks tests (no tests here).

`FakeLayerCollection` stands in for `LayerCollection.make_or_get_factor`, so the
block tests do not depend on layer_collection. The numpy functions are the
independent references: explicit loops and dense matrices.
"""

import collections

import numpy as np
import tensorflow.compat.v1 as tf


class FakeLayerCollection(object):
    """Caches `cls(*args)` under the hashable key `(cls, args)`."""

    def __init__(self):
        self.fisher_factors = collections.OrderedDict()

    def make_or_get_factor(self, cls, args):
        key = (cls, args)
        hash(key)  # TypeError for unhashable args, as in LayerCollection.
        if key not in self.fisher_factors:
            self.fisher_factors[key] = cls(*args)
        return self.fisher_factors[key]


def make_factor_updates(layer_collection):
    """Makes every factor's variables and its update ops.

    Returns `(cov_update_ops, inv_update_ops)`; covariances use decay 0, so after
    one cov update each factor equals its mini-batch estimate.
    """
    # A LayerCollection (or the fake) or a block's FactorCache.
    factors = getattr(layer_collection, "fisher_factors", None)
    if factors is None:
        factors = layer_collection.factors
    factors = list(factors.values())
    for factor in factors:
        factor.instantiate_cov_variables()
    for factor in factors:
        factor.instantiate_inv_variables()
    cov_ops = [factor.make_covariance_update_op(0.0) for factor in factors]
    inv_ops = [tf.group(*factor.make_inverse_update_ops()) for factor in factors]
    return cov_ops, inv_ops


def build_block_updates(block, grads_list, damping, exps=(-1,)):
    """Instantiates the block's factors, registers `exps`, makes the update ops."""
    block.instantiate_factors(grads_list, damping)
    for exp in exps:
        block.register_matpower(exp)
    return make_factor_updates(block._factors)


def run_updates(sess, cov_ops, inv_ops):
    """Initialises the variables, then runs the cov updates, then the inverses."""
    sess.run(tf.global_variables_initializer())
    sess.run(cov_ops)
    sess.run(inv_ops)


def with_ones(rows):
    """Appends the homogeneous (bias) column."""
    return np.concatenate([rows, np.ones((rows.shape[0], 1))], axis=1)


def second_moment(rows):
    """`(1/N) Σ_rows r rᵀ` by an explicit loop."""
    total = np.zeros((rows.shape[1], rows.shape[1]))
    for row in rows:
        total += np.outer(row, row)
    return total / rows.shape[0]


def pi_tracenorm(left, right):
    return np.sqrt(
        (np.trace(left) / left.shape[0]) / (np.trace(right) / right.shape[0])
    )


def kron_damped(left, right, damping, normalization=1.0, renorm=1.0):
    """Dense `c·(L + π√d' I) ⊗ (R + √d'/π I)`, `d' = damping / normalization`."""
    scaled = damping / normalization
    pi = pi_tracenorm(left, right)
    left_damped = left + pi * np.sqrt(scaled) * np.eye(left.shape[0])
    right_damped = right + np.sqrt(scaled) / pi * np.eye(right.shape[0])
    return renorm * np.kron(left_damped, right_damped)


def apply_dense(matrix, mat2d):
    """`matrix @ vec(mat2d)` with row-major `vec`, reshaped back."""
    return (matrix @ mat2d.reshape(-1)).reshape(mat2d.shape)


def solve_dense(matrix, mat2d):
    return np.linalg.solve(matrix, mat2d.reshape(-1)).reshape(mat2d.shape)


def conv_patches(
    inputs, kernel_hw, strides_hw=(1, 1), padding="VALID", dilations_hw=(1, 1)
):
    """Conv2d patches by loops: `[B, out_h, out_w, kh·kw·C]`, (kh, kw, C) order."""
    batch, height, width, channels = inputs.shape
    kernel_h, kernel_w = kernel_hw
    stride_h, stride_w = strides_hw
    dil_h, dil_w = dilations_hw
    span_h = (kernel_h - 1) * dil_h + 1
    span_w = (kernel_w - 1) * dil_w + 1
    if padding == "VALID":
        out_h = (height - span_h) // stride_h + 1
        out_w = (width - span_w) // stride_w + 1
        pad_top = pad_left = 0
    else:
        out_h = -(-height // stride_h)
        out_w = -(-width // stride_w)
        pad_top = max((out_h - 1) * stride_h + span_h - height, 0) // 2
        pad_left = max((out_w - 1) * stride_w + span_w - width, 0) // 2
    patches = np.zeros((batch, out_h, out_w, kernel_h, kernel_w, channels))
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                for a in range(kernel_h):
                    for c in range(kernel_w):
                        row = i * stride_h - pad_top + a * dil_h
                        col = j * stride_w - pad_left + c * dil_w
                        if 0 <= row < height and 0 <= col < width:
                            patches[b, i, j, a, c] = inputs[b, row, col]
    return patches.reshape(batch, out_h, out_w, -1)


def depthwise_to_conv2d(depthwise):
    """`[h, w, c, m]` → `[h, w, c, c·m]`; channel `i·m + k` reads channel `i` only."""
    height, width, channels, multiplier = depthwise.shape
    result = np.zeros((height, width, channels, channels * multiplier))
    for i in range(channels):
        for k in range(multiplier):
            result[:, :, i, i * multiplier + k] = depthwise[:, :, i, k]
    return result


def conv2d_to_depthwise(conv2d, multiplier):
    height, width, channels, _ = conv2d.shape
    result = np.zeros((height, width, channels, multiplier))
    for i in range(channels):
        for k in range(multiplier):
            result[:, :, i, k] = conv2d[:, :, i, i * multiplier + k]
    return result
