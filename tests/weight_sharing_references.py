"""numpy references of the weight-sharing Kronecker factors (Eschenhagen et al.
2023): KFAC-expand and KFAC-reduce from per-position inputs and output-gradient
sources, with optional position weights, and exact GGN blocks of small linear
networks built from explicit Jacobians.

Shapes: inputs `a` `[N, P, n]` (examples, positions, features), sources `g`
`[S, N, P, m]` (one slice per curvature source), weights `w` `[N, P]`.
"""

import numpy as np


def with_ones(rows):
    """`[..., n]` → `[..., n+1]` with a trailing 1 (the bias coordinate)."""
    return np.concatenate([rows, np.ones(rows.shape[:-1] + (1,))], axis=-1)


def example_weights(weights):
    """`u_n`: mean of the non-zero weights of example `n` (0 when it has none)."""
    real = (weights > 0).sum(axis=1)
    totals = weights.sum(axis=1)
    return np.divide(totals, real, out=np.zeros_like(totals), where=real > 0)


def expand_factors(inputs, sources, weights=None):
    """`(A, G, c)`: `A = Σ w ã ãᵀ / Σ w`, `G = Σ_s Σ [w>0] g gᵀ / (P Σ u)` and
    the block coefficient `c = P` (positions per example), so `c·A ⊗ G` is
    KFAC-expand for a loss per example."""
    num_examples, num_positions = inputs.shape[:2]
    if weights is None:
        weights = np.ones([num_examples, num_positions])
    flat_weights = weights.reshape(-1)
    rows = inputs.reshape(-1, inputs.shape[-1])
    input_factor = (rows * flat_weights[:, None]).T @ rows / flat_weights.sum()
    mask = (flat_weights > 0).astype(float)
    output_factor = sum(
        (source.reshape(-1, source.shape[-1]) * mask[:, None]).T
        @ source.reshape(-1, source.shape[-1])
        for source in sources
    ) / (num_positions * example_weights(weights).sum())
    return input_factor, output_factor, num_positions


def reduce_factors(inputs, sources, weights=None, has_bias=False):
    """`(A, G)` of KFAC-reduce: `â_n = Σ_p w ã / Σ_p w` (bias coordinate
    appended after the mean), `ĝ_n = Σ_p [w>0] g`, `A = Σ u â âᵀ / Σ u`,
    `G = Σ_s Σ [u>0] ĝ ĝᵀ / Σ u`."""
    num_examples, num_positions = inputs.shape[:2]
    if weights is None:
        weights = np.ones([num_examples, num_positions])
    totals = weights.sum(axis=1, keepdims=True)
    means = np.divide(
        (inputs * weights[:, :, None]).sum(axis=1),
        totals,
        out=np.zeros([num_examples, inputs.shape[-1]]),
        where=totals > 0,
    )
    if has_bias:
        means = with_ones(means)
    u = example_weights(weights)
    input_factor = (means * u[:, None]).T @ means / u.sum()
    mask = (weights > 0).astype(float)
    output_factor = 0.0
    for source in sources:
        sums = (source * mask[:, :, None]).sum(axis=1)
        sums = sums * (u > 0)[:, None]
        output_factor = output_factor + sums.T @ sums
    return input_factor, output_factor / u.sum()


def linear_jacobian(inputs, later_weights):
    """`∂(x W W₂)/∂vec(W)` for one input row `x`: `kron(x, W₂ᵀ)`, `[out, in·hid]`
    (row-major `vec` of the `[in, hid]` weights, as the blocks' mat2d form)."""
    return np.kron(inputs[None, :], later_weights.T)


def ggn_block(jacobians, output_fisher):
    """`(1/N) Σ_n J_nᵀ Λ J_n` over the examples' Jacobians."""
    return sum(j.T @ output_fisher @ j for j in jacobians) / len(jacobians)
