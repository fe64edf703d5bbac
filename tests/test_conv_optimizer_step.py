"""One full K-FAC step of a conv2d layer (with bias) against a numpy K-FC step.

The model is a single conv2d layer whose pre-activations, summed over the
output locations, are the logits of a softmax: `logits_b = Σ_loc z_{b,loc}`.
With `estimation_mode='exact'` and `cov_ema_decay=0` the factors equal their
batch estimates (Grosse & Martens 2016, K-FC):

  Ω = (1/(B·T)) Σ_{b,loc} ã ãᵀ            (ã: the patch with a trailing 1)
  Γ = (1/(B·T)) Σ_{b,loc} Σ_k ds_k ds_kᵀ = mean_b (diag(p_b) − p_b p_bᵀ)

and the block is `T·(Ω ⊗ Γ)` with damping `λ/T` split by the trace-norm π, so
the step is `−lr · (1/T)(Ω + π√(λ/T) I)⁻¹ ∇W (Γ + √(λ/T)/π I)⁻¹`.
"""

import numpy as np
import pytest
import session_helpers
import tensorflow.compat.v1 as tf

import kfac

BATCH, SIZE, CIN, COUT, KERNEL = 4, 5, 2, 3, 3


def _numpy_same_patches(images, kernel):
    """`[B, H, W, kernel·kernel·cin]` patches of SAME stride-1 padding, by loops."""
    batch, height, width, channels = images.shape
    pad = kernel // 2
    padded = np.zeros((batch, height + 2 * pad, width + 2 * pad, channels))
    padded[:, pad : pad + height, pad : pad + width] = images
    patches = np.zeros((batch, height, width, kernel * kernel * channels))
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                column = []
                for di in range(kernel):
                    for dj in range(kernel):
                        for c in range(channels):
                            column.append(padded[b, i + di, j + dj, c])
                patches[b, i, j] = column
    return patches


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _numpy_kfc_step(images, labels, filters, bias, lr, damping):
    patches = _numpy_same_patches(images, KERNEL)
    rows = patches.reshape(-1, patches.shape[-1])
    rows = np.concatenate([rows, np.ones((len(rows), 1))], axis=1)
    num_locations = SIZE * SIZE
    weights = np.concatenate([filters.reshape(-1, COUT), bias[None]], axis=0)
    pre_activations = (rows @ weights).reshape(BATCH, num_locations, COUT)
    probs = _softmax(pre_activations.sum(axis=1))
    one_hot = np.eye(COUT)[labels]

    # Gradient of the mean cross-entropy: dL/dz_{b,loc} = (p_b − y_b)/B.
    output_grads = np.repeat((probs - one_hot)[:, None, :] / BATCH, num_locations, 1)
    grad = rows.T @ output_grads.reshape(-1, COUT)

    input_factor = rows.T @ rows / (BATCH * num_locations)
    output_factor = np.mean([np.diag(p) - np.outer(p, p) for p in probs], axis=0)
    normalized_damping = damping / num_locations
    pi = np.sqrt(
        (np.trace(input_factor) / len(input_factor))
        / (np.trace(output_factor) / len(output_factor))
    )
    input_damping = pi * np.sqrt(normalized_damping)
    output_damping = np.sqrt(normalized_damping) / pi
    preconditioned = (
        np.linalg.inv(input_factor + input_damping * np.eye(len(input_factor)))
        @ grad
        @ np.linalg.inv(output_factor + output_damping * np.eye(COUT))
    ) / num_locations
    new_weights = weights - lr * preconditioned
    return new_weights[:-1].reshape(filters.shape), new_weights[-1]


@pytest.mark.parametrize("damping", [0.1, 1.0])
def test_conv2d_step_equals_numpy_kfc(tf_behavior, damping):
    rng = np.random.RandomState(0)
    images = rng.randn(BATCH, SIZE, SIZE, CIN)
    labels = np.array([0, 1, 2, 1])
    filters0 = 0.3 * rng.randn(KERNEL, KERNEL, CIN, COUT)
    bias0 = 0.1 * rng.randn(COUT)
    lr = 0.5
    with tf.Graph().as_default():
        x = tf.constant(images)
        filters = tf.get_variable("filters", initializer=tf.constant(filters0))
        bias = tf.get_variable("bias", initializer=tf.constant(bias0))
        pre_activations = tf.nn.conv2d(x, filters, [1, 1, 1, 1], "SAME") + bias
        logits = tf.reduce_sum(pre_activations, axis=[1, 2])
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.constant(labels), logits=logits
            )
        )
        layers = kfac.LayerCollection()
        layers.register_conv2d(
            (filters, bias), [1, 1, 1, 1], "SAME", x, pre_activations
        )
        layers.register_categorical_predictive_distribution(logits)
        _, (got_filters, got_bias) = session_helpers.one_exact_kfac_step(
            loss, layers, [filters, bias], lr, damping
        )

    want_filters, want_bias = _numpy_kfc_step(
        images, labels, filters0, bias0, lr, damping
    )
    assert np.abs(want_filters - filters0).max() > 1e-2  # a real step
    np.testing.assert_allclose(got_filters, want_filters, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got_bias, want_bias, rtol=1e-8, atol=1e-10)
