"""Temporally-correlated K-FAC for a fully connected layer shared across time.

Martens, Ba & Grosse 2018, "Kronecker-factored curvature approximations for
recurrent neural networks". With `T` time steps, per-step weight gradients
`w_t` are modelled as a stationary process with lag-0/lag-1 moments
`V₀ = A₀ ⊗ G₀` and `V₁ = A₁ ⊗ G₁`; the factors provide, in whitened
coordinates `Ψ = V₀^{-1/2} V₁ V₀^{-1/2}`:

* option 1 (`V₁` assumed symmetric): `L = V₀^{-1/2} U`, `ψ` with `Ψ = U diag(ψ) Uᵀ`;
  `F̂⁻¹ = L diag(γ(ψ)) Lᵀ`, `γ(x) = (1−x)² / (T(1−x²) − 2x(1−x^T))`.
* option 2 (`T → ∞`): `P = V₁ᵀ V₀⁻¹`, `K = V₀^{-1/2} E`, `μ = σ(Ψ)²` (SVD
  `Ψ = U diag(σ) Eᵀ`); `F̂⁻¹ = (1/T)(I − Pᵀ) K diag(1/(1−μ)) Kᵀ (I − P)`.

All products act factor-wise on `Z = Xᵀ` (`[out, in]`), `X` the mat2d form.
"""

import enum

import tensorflow.compat.v1 as tf

from kfac.ops._blocks.kronecker import KroneckerProductFB
from kfac.ops._blocks.multi_use import make_multi_use_factors
from kfac.ops._blocks.towers import InputOutputMultiTowerMultiUse
from kfac.ops._utils import reshape


class SeriesFBApproximation(enum.IntEnum):
    """Approximations of `FullyConnectedSeriesFB` (see the module docstring)."""

    option1 = 1
    option2 = 2


def _outer(column, row):
    """`column[:, None] * row[None, :]` for two vectors."""
    return tf.reshape(column, [-1, 1]) * tf.reshape(row, [1, -1])


class FullyConnectedSeriesFB(InputOutputMultiTowerMultiUse, KroneckerProductFB):
    """FC layer shared across `T = num_uses` time steps, with temporal correlation.

    Only inverse products are supported (`exp == -1`).
    """

    def __init__(
        self,
        layer_collection,
        has_bias=False,
        num_uses=None,
        option=SeriesFBApproximation.option2,
    ):
        """Creates the block.

        Args:
            layer_collection: owner that builds/shares the factors.
            has_bias: whether the parameters are `(weights [in, out], bias [out])`.
            num_uses: number of time steps; inferred from list inputs when None.
            option: `SeriesFBApproximation.option1` or `.option2` (checked when
                inverses are registered).
        """
        self._has_bias = has_bias
        self._option = option
        super(FullyConnectedSeriesFB, self).__init__(
            layer_collection=layer_collection, num_uses=num_uses
        )

    @property
    def _num_timesteps(self):
        return self._num_uses

    @property
    def _renorm_coeff(self):
        # The products below include their own normalisation.
        raise AssertionError("FullyConnectedSeriesFB does not use _renorm_coeff.")

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        self._input_factor, self._output_factor = make_multi_use_factors(
            self, inputs, grads_list
        )
        self._input_factor.register_cov_dt1()
        self._output_factor.register_cov_dt1()
        self._setup_damping(damping, normalization=self._num_uses)

    def register_matpower(self, exp):
        """Registers the option's quantities on both factors (only `exp == -1`).

        Raises:
            NotImplementedError: for `exp != -1`.
            ValueError: for an unknown `option`.
        """
        if exp != -1:
            raise NotImplementedError(
                "FullyConnectedSeriesFB only supports inverse multiplications "
                "(exp=-1), got exp=%r." % (exp,)
            )
        if self._option == SeriesFBApproximation.option1:
            self._input_factor.register_option1quants(self._input_damping_func)
            self._output_factor.register_option1quants(self._output_damping_func)
        elif self._option == SeriesFBApproximation.option2:
            self._input_factor.register_option2quants(self._input_damping_func)
            self._output_factor.register_option2quants(self._output_damping_func)
        else:
            raise ValueError(
                "FullyConnectedSeriesFB: option must be SeriesFBApproximation.option1 "
                "or option2, got %r." % (self._option,)
            )

    def multiply_matpower(self, vector, exp):
        """`F̂⁻¹ vector` with the option's formula (module docstring).

        Raises:
            NotImplementedError: for `exp != -1`.
        """
        if exp != -1:
            raise NotImplementedError(
                "FullyConnectedSeriesFB only supports inverse multiplications "
                "(exp=-1), got exp=%r." % (exp,)
            )
        # The derivation uses the [out, in] orientation.
        z = tf.transpose(reshape.layer_params_to_mat2d(vector))
        if self._option == SeriesFBApproximation.option1:
            z = self._multiply_inverse_option1(z)
        elif self._option == SeriesFBApproximation.option2:
            z = self._multiply_inverse_option2(z)
        else:
            raise ValueError(
                "FullyConnectedSeriesFB: option must be SeriesFBApproximation.option1 "
                "or option2, got %r." % (self._option,)
            )
        return reshape.mat2d_to_layer_params(vector, tf.transpose(z))

    def _multiply_inverse_option1(self, z):
        """`Z ← L_G (γ(ψ_G ψ_Aᵀ) ∘ (L_Gᵀ Z L_A)) L_Aᵀ`."""
        l_a, psi_a = self._input_factor.get_option1quants(self._input_damping_func)
        l_g, psi_g = self._output_factor.get_option1quants(self._output_damping_func)
        num_timesteps = self._num_timesteps

        def gamma(x):
            # Assumes every sequence has exactly T steps; for varying lengths the
            # paper's definition of γ must be used, not the mean T.
            return (1 - x) ** 2 / (
                num_timesteps * (1 - x**2) - 2 * x * (1 - x**num_timesteps)
            )

        # Y depends on both factors, so it cannot be cached in either of them.
        y = gamma(_outer(psi_g, psi_a))
        z = tf.matmul(l_g, tf.matmul(z, l_a), transpose_a=True)
        z *= y
        return tf.matmul(l_g, tf.matmul(z, l_a, transpose_b=True))

    def _multiply_inverse_option2(self, z):
        """`(1/T)(I − Pᵀ) K diag(1/(1 − μ_G μ_Aᵀ)) Kᵀ (I − P)` applied factor-wise.

        `K_Gᵀ(Z − P_G Z P_Aᵀ)K_A` combines the paper's first three steps
        (whitening, subtracting `Ψᵀ Z Ψ`, rotating to `E`) in fewer products.
        """
        p_a, k_a, mu_a = self._input_factor.get_option2quants(self._input_damping_func)
        p_g, k_g, mu_g = self._output_factor.get_option2quants(
            self._output_damping_func
        )
        z -= tf.matmul(p_g, tf.matmul(z, p_a, transpose_b=True))
        z = tf.matmul(k_g, tf.matmul(z, k_a), transpose_a=True)
        denominator = 1.0 - _outer(mu_g, mu_a)
        # An exactly singular direction (μ_G μ_A = 1) is left unscaled.
        denominator += tf.cast(tf.equal(denominator, 0.0), denominator.dtype)
        z /= denominator
        z = tf.matmul(k_g, tf.matmul(z, k_a, transpose_b=True))
        z -= tf.matmul(p_g, tf.matmul(z, p_a), transpose_a=True)
        # Statistics are averages over time while the gradient is a sum over time.
        return z / tf.cast(self._num_timesteps, z.dtype)
