"""numpy references of the sequence and embedding optimizer tests: softmax
cotangents, exact-Fisher sources, the π-split damping, Kronecker and series
(Martens, Ba & Grosse 2018) steps, and an RNN's forward/backward passes."""

import numpy as np


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def loss_cotangent(logits, labels):
    """d(mean cross-entropy)/dlogits."""
    probs = softmax(logits)
    probs[np.arange(len(labels)), labels] -= 1.0
    return probs / len(labels)


def exact_fisher_sources(logits):
    """Per class `i`, rows `q_i (e_i − p)`: columns of the factor `B` (API.md §3)."""
    probs = softmax(logits)
    sqrt_probs = np.sqrt(probs)
    eye = np.eye(logits.shape[1])
    return [sqrt_probs[:, [i]] * (eye[i] - probs) for i in range(logits.shape[1])]


def with_ones(rows):
    return np.concatenate([rows, np.ones([len(rows), 1])], axis=1)


def pi_tracenorm(input_cov, output_cov):
    """Trace-norm π (API.md §5); a 1-D `input_cov` is a diagonal."""
    input_trace = np.sum(input_cov) if input_cov.ndim == 1 else np.trace(input_cov)
    return np.sqrt(
        (input_trace / len(input_cov)) / (np.trace(output_cov) / len(output_cov))
    )


def split_damping(input_cov, output_cov, damping):
    pi = pi_tracenorm(input_cov, output_cov)
    return pi * np.sqrt(damping), np.sqrt(damping) / pi


def kron_step(input_cov, output_cov, gradient, damping, num_uses=1):
    """`(n(A ⊗ G) + π-split damping)⁻¹ g` on the mat2d gradient, damping λ/n."""
    input_damping, output_damping = split_damping(
        input_cov, output_cov, damping / num_uses
    )
    left = np.linalg.inv(input_cov + input_damping * np.eye(len(input_cov)))
    right = np.linalg.inv(output_cov + output_damping * np.eye(len(output_cov)))
    return left @ gradient @ right / num_uses


def inverse_sqrt(matrix):
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return eigenvectors @ np.diag(eigenvalues**-0.5) @ eigenvectors.T


def option1_quantities(cov0, cov1):
    """`(L, ψ)`: `Ψ = S sym(C₁) S = U diag(ψ) Uᵀ`, `L = S U`, `S = C₀^{-1/2}`.

    As `utils.posdef_eig`, the eigenvalues of Ψ are taken in absolute value.
    """
    whitening = inverse_sqrt(cov0)
    psi, rotation = np.linalg.eigh(whitening @ ((cov1 + cov1.T) / 2) @ whitening)
    return whitening @ rotation, np.abs(psi)


def option2_quantities(cov0, cov1):
    """`(P, K, μ)`: `P = C₁ᵀ C₀⁻¹`, `Ψ = S C₁ S = U diag(σ) Eᵀ`, `K = S E`, `μ = σ²`."""
    whitening = inverse_sqrt(cov0)
    _, singular_values, right_t = np.linalg.svd(whitening @ cov1 @ whitening)
    return (
        cov1.T @ np.linalg.inv(cov0),
        whitening @ right_t.T,
        np.minimum(singular_values**2, 1.0),
    )


def series_step(option, inputs, grads, gradient, damping):
    """Martens, Ba & Grosse (2018) options 1/2 on the mat2d gradient (API.md §5).

    Args:
      inputs, grads: per time step, `[B, in+1]` layer inputs (with ones) and
        `[B, out]` pre-activation gradients (for grads: a list over sources of
        such lists).
    """
    num_steps, batch = len(inputs), len(inputs[0])
    rows = num_steps * batch

    def moments(steps):
        cov0 = sum(step.T @ step for step in steps) / rows
        cov1 = sum(steps[t + 1].T @ steps[t] for t in range(num_steps - 1)) / rows
        return cov0, cov1

    input_cov0, input_cov1 = moments(inputs)
    source_moments = [moments(source) for source in grads]
    output_cov0 = sum(cov0 for cov0, _ in source_moments)
    output_cov1 = sum(cov1 for _, cov1 in source_moments)
    input_damping, output_damping = split_damping(
        input_cov0, output_cov0, damping / num_steps
    )
    input_cov0 = input_cov0 + input_damping * np.eye(len(input_cov0))
    output_cov0 = output_cov0 + output_damping * np.eye(len(output_cov0))
    z = gradient.T  # [out, in+1]
    if option == 1:
        input_l, input_psi = option1_quantities(input_cov0, input_cov1)
        output_l, output_psi = option1_quantities(output_cov0, output_cov1)
        x = np.outer(output_psi, input_psi)
        gamma = (1 - x) ** 2 / (num_steps * (1 - x**2) - 2 * x * (1 - x**num_steps))
        z = output_l @ ((output_l.T @ z @ input_l) * gamma) @ input_l.T
    else:
        input_p, input_k, input_mu = option2_quantities(input_cov0, input_cov1)
        output_p, output_k, output_mu = option2_quantities(output_cov0, output_cov1)
        z = z - output_p @ z @ input_p.T
        z = output_k.T @ z @ input_k
        z = z / (1 - np.outer(output_mu, input_mu))
        z = output_k @ z @ input_k.T
        z = z - output_p.T @ z @ input_p
        z = z / num_steps
    return z.T


def rnn_forward(sequences, weights, bias):
    """Layer inputs `[x_t, h_{t-1}]` and states `h_t` of the tanh RNN."""
    batch, hidden = len(sequences), len(bias)
    state = np.zeros([batch, hidden])
    layer_inputs, states = [], []
    for t in range(sequences.shape[1]):
        layer_inputs.append(np.concatenate([sequences[:, t], state], axis=1))
        state = np.tanh(layer_inputs[-1] @ weights + bias)
        states.append(state)
    return layer_inputs, states


def rnn_backward(states, weights, state_cotangent):
    """Backpropagation through time: `dL/ds_t` for every step, from `dL/dh_{T-1}`."""
    input_size = len(weights) - weights.shape[1]
    preactivation_grads = [None] * len(states)
    cotangent = state_cotangent
    for t in reversed(range(len(states))):
        preactivation_grads[t] = cotangent * (1 - states[t] ** 2)
        cotangent = (preactivation_grads[t] @ weights.T)[:, input_size:]
    return preactivation_grads


def rnn_problem(rng, batch, num_steps, input_size, hidden, classes):
    """Random sequences, labels and RNN/classifier parameters (float64)."""
    return dict(
        sequences=rng.rand(batch, num_steps, input_size),
        labels=rng.randint(0, classes, batch),
        weights=0.8 * rng.randn(input_size + hidden, hidden),
        bias=0.1 * rng.randn(hidden),
        output_weights=rng.randn(hidden, classes),
        output_bias=0.1 * rng.randn(classes),
    )
