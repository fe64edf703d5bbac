"""EKFAC blocks (George et al. 2018): the Kronecker eigenbasis, rescaled.

The block is `F ≈ U diag(s) Uᵀ` with `U = U_A ⊗ U_G` the eigenvectors of the
layer's two K-FAC factors and `s` the per-example gradient second moments in
that basis (`_factors/eigenbasis.py`). Products act on the mat2d form `X`:

    (F + d I)^e vec(X) = vec(U_A [(s + d)^e ∘ (U_Aᵀ X U_G)] U_Gᵀ),

so the damping is added to every direction's scaling, `U (s + d)^-1 Uᵀ` for the
inverse, with `d` the damping as given (for a convolution, the KFC block's
damping normalised by the locations and multiplied back gives the same `d`).
The factors' covariances are those of the K-FAC block of the same layer (and
shared with it); the inverse updates compute the eigenbases, and no matrix
power is kept.
"""

import tensorflow.compat.v1 as tf

from kfac.ops._blocks import damping as damping_lib
from kfac.ops._blocks.base import FisherBlock
from kfac.ops._blocks.conv import ConvKFCMixin
from kfac.ops._blocks.kronecker import FullyConnectedKroneckerFactors
from kfac.ops._blocks.towers import InputOutputMultiTower
from kfac.ops._factors import eigenbasis as eigenbasis_factors
from kfac.ops._utils import reshape


class EigenbasisProducts(FisherBlock):
    """Products with `U diag(s) Uᵀ`, from `_input_factor`, `_output_factor`
    (the bases) and `_eigenvalue_factor` (`s`), set by `instantiate_factors`."""

    def _make_eigenvalue_factor(self, factor_class, inputs, grads_list, damping):
        args = (
            inputs,
            grads_list,
            self._input_factor,
            self._output_factor,
            self._has_bias,
        )
        weights = self._process_weights()
        if weights is not None:
            args += (weights,)
        self._eigenvalue_factor = self._factors.make_or_get_factor(factor_class, args)
        self._damping_func = damping_lib.constant_damping_func(damping)

    def register_matpower(self, exp):
        # Every power is formed from the bases and `s` when multiplying.
        del exp
        self._input_factor.register_eigenbasis()
        self._output_factor.register_eigenbasis()

    def _bases(self):
        return self._input_factor.eigenbasis, self._output_factor.eigenbasis

    def multiply_matpower(self, vector, exp):
        """`U_A [(s + d)^exp ∘ (U_Aᵀ X U_G)] U_Gᵀ`, `X` the mat2d form of `vector`."""
        input_basis, output_basis = self._bases()
        mat = reshape.layer_params_to_mat2d(vector)
        projected = tf.matmul(
            tf.matmul(input_basis, mat, transpose_a=True), output_basis
        )
        scaled = self._eigenvalue_factor.left_multiply_matpower(
            projected, exp, self._damping_func
        )
        out = tf.matmul(tf.matmul(input_basis, scaled), output_basis, transpose_b=True)
        return reshape.mat2d_to_layer_params(vector, out)

    def full_fisher_block(self):
        """Undamped `U diag(s) Uᵀ` as a dense matrix (row-major `vec` of mat2d)."""
        basis = reshape.kronecker_product(*self._bases())
        scaling = tf.reshape(self._eigenvalue_factor.get_cov_var(), [-1])
        return tf.matmul(basis * scaling, basis, transpose_b=True)


class FullyConnectedEKFACFB(FullyConnectedKroneckerFactors, EigenbasisProducts):
    """EKFAC block of a fully connected layer (`FullyConnectedKFACBasicFB`'s
    arguments): the bases of `E[ã ãᵀ]` and `E[g gᵀ]` (the K-FAC factors) and
    `s = E[(U_Aᵀ ã)² (U_Gᵀ g)²ᵀ]`."""

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._make_kronecker_factors(grads_list)
        self._make_eigenvalue_factor(
            eigenbasis_factors.FullyConnectedEigenbasisFactor,
            inputs,
            grads_list,
            damping,
        )


class ConvEKFACFB(InputOutputMultiTower, ConvKFCMixin, EigenbasisProducts):
    """EKFAC block of a convolution (`ConvKFCBasicFB`'s arguments): the bases
    of the KFC factors `Ω` and `Γ` and `s = E_b[(U_Ωᵀ G_b U_Γ)²]` over the
    per-example filter gradients."""

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        self._make_conv_factors(inputs, grads_list)
        self._make_eigenvalue_factor(
            eigenbasis_factors.ConvEigenbasisFactor, inputs, grads_list, damping
        )
