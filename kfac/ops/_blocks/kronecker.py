"""Kronecker-factored blocks (Martens & Grosse 2015, §3): the base and the FC block.

A Kronecker block is `F ≈ c·(A ⊗ G)`: `A` the second moment of the layer inputs
(with a ones column for the bias), `G` that of the output gradients, `c` a
renormalisation (`_renorm_coeff`, the number of locations/uses). It acts on the
mat2d form `X` (`[in(+1), out]`, row-major `vec`): `(A ⊗ G) vec(X) = vec(A X G)`.
"""

import tensorflow.compat.v1 as tf

from kfac.ops._blocks import damping as damping_lib
from kfac.ops._blocks.base import FisherBlock
from kfac.ops._blocks.towers import FullyConnectedMultiTower
from kfac.ops._blocks.towers import with_position_statistics
from kfac.ops._factors import fully_connected as fc_factors
from kfac.ops._utils import reshape


def scale_vector(vector, coeff: float):
    """`coeff · vector` for a dense Tensor or an `IndexedSlices` (values scaled).

    `coeff` is a Python number, converted straight to the vector's dtype (a
    `tf.cast` of a Python float would round it to float32 first).
    """
    if isinstance(vector, tf.IndexedSlices):
        return tf.IndexedSlices(
            vector.values * coeff, vector.indices, vector.dense_shape
        )
    return vector * coeff


class KroneckerProductFB(FisherBlock):
    """Block `c·(A ⊗ G)` with damped powers `c^e (A + d_A I)^e ⊗ (G + d_G I)^e`.

    Subclasses set `_input_factor` (A, acting on the left of the mat2d form) and
    `_output_factor` (G, on the right) in `instantiate_factors` and then call
    `_setup_damping`.
    """

    def _setup_damping(self, damping, normalization=None):
        """Creates `_input_damping_func` and `_output_damping_func` (the pi split).

        With `d' = normalize_damping(damping, normalization)` (or `damping` when
        no normalization is given), `(d_A, d_G) = compute_pi_adjusted_damping(
        A, G, sqrt(d'))`, i.e. `d_A = π√d'`, `d_G = √d'/π`. π is recomputed from
        the factors' current covariances each time a function is called (inside
        every inverse update). With `c = normalization`, the damped block is
        `c(A + d_A I) ⊗ (G + d_G I) ≈ c(A ⊗ G) + damping·I`.

        Args:
            damping: Python float, scalar Tensor or `tf.Variable`.
            normalization: number of locations/uses the damping is shared by, or
                None.
        """
        if normalization is not None:
            normalization = damping_lib.plain_scalar(normalization)

        def compute_damping():
            if normalization is not None:
                scaled_damping = damping_lib.normalize_damping(
                    damping, normalization, self._config.normalize_damping_power
                )
            else:
                scaled_damping = damping
            return damping_lib.compute_pi_adjusted_damping(
                self._input_cov_for_pi(),
                self._output_factor.get_cov(),
                scaled_damping**0.5,
                self._config.pi_type,
            )

        if normalization is not None:
            scaled_damping_id = ("normalize_damping", damping, normalization)
        else:
            scaled_damping_id = (damping,)
        damping_id = (
            (
                "compute_pi_adjusted_damping",
                "cov",
                self._input_factor.name,
                "cov",
                self._output_factor.name,
            )
            + scaled_damping_id
            + ("power", 0.5)
        )
        self._input_damping_func = damping_lib.PackagedFunc(
            lambda: compute_damping()[0], damping_id + ("ref", 0)
        )
        self._output_damping_func = damping_lib.PackagedFunc(
            lambda: compute_damping()[1], damping_id + ("ref", 1)
        )

    def _input_cov_for_pi(self):
        """The input factor's covariance as used for its trace in the pi split."""
        return self._input_factor.get_cov()

    def register_matpower(self, exp):
        self._input_factor.register_matpower(exp, self._input_damping_func)
        self._output_factor.register_matpower(exp, self._output_damping_func)

    @property
    def _renorm_coeff(self):
        """`c` in `F ≈ c·(A ⊗ G)`."""
        return 1.0

    def _left_multiply_input_factor(self, mat, exp):
        """`(A + d_A I)^exp · mat`."""
        return self._input_factor.left_multiply_matpower(
            mat, exp, self._input_damping_func
        )

    def multiply_matpower(self, vector, exp):
        """`c^exp (A + d_A I)^exp · X · (G + d_G I)^exp`, `X` = mat2d form of `vector`.

        Args:
            vector: parameter-format vector: weights-shaped Tensor, a
                `(weights, bias)` tuple, or `IndexedSlices` (embeddings).
            exp: the matrix power (a registered one, or 1).

        Returns:
            The product in the format of `vector`.
        """
        mat = reshape.layer_params_to_mat2d(vector)
        mat = self._output_factor.right_multiply_matpower(
            mat, exp, self._output_damping_func
        )
        mat = self._left_multiply_input_factor(mat, exp)
        renorm_coeff = self._renorm_coeff
        if renorm_coeff != 1.0:
            mat = scale_vector(mat, float(renorm_coeff) ** exp)
        return reshape.mat2d_to_layer_params(vector, mat)

    def full_fisher_block(self):
        """Undamped `c·kron(A, G)` as a dense matrix (row-major `vec` of mat2d)."""
        left_factor = self._input_factor.get_cov()
        right_factor = self._output_factor.get_cov()
        return self._renorm_coeff * reshape.kronecker_product(left_factor, right_factor)


class FullyConnectedKroneckerFactors(FullyConnectedMultiTower):
    """A fully connected layer's K-FAC factors `A = E[ã ãᵀ]` and `G = E[g gᵀ]`
    (shared by every block built on them).

    Inputs `[B, ..., in]` contribute one row per leading position, each its own
    example (KFAC-expand with a per-position loss: the statistics of the
    inputs reshaped to `[-1, in]`); `_reduce` (KFAC-reduce) instead aggregates
    the positions of each of the `B` examples first (`_factors/positions.py`).
    Position weights or masks of the towers weight the statistics.
    """

    _reduce = False

    def _make_kronecker_factors(self, grads_list):
        """Sets `_input_factor` (A) and `_output_factor` (G); returns the
        processed `(inputs, grads_list)`."""
        inputs, grads_list = self._process_data(grads_list)
        layout = "examples_first" if self._reduce else "rows"
        input_statistics = self._position_statistics("inputs", layout, self._reduce)
        output_statistics = self._position_statistics("outputs", layout, self._reduce)
        self._input_factor = self._factors.make_or_get_factor(
            fc_factors.FullyConnectedKroneckerFactor,
            with_position_statistics(((inputs,), self._has_bias), input_statistics),
        )
        self._output_factor = self._factors.make_or_get_factor(
            fc_factors.FullyConnectedKroneckerFactor,
            with_position_statistics((grads_list,), output_statistics, (False,)),
        )
        return inputs, grads_list


class FullyConnectedKFACBasicFB(FullyConnectedKroneckerFactors, KroneckerProductFB):
    """K-FAC block of a fully connected layer (Martens & Grosse 2015, §3).

    `A = E[ã ãᵀ]` (`ã` the input row with a trailing 1 when there is a bias),
    `G = E[g gᵀ]` (`g` the gradient w.r.t. the pre-activations), `F ≈ A ⊗ G`.
    """

    def instantiate_factors(self, grads_list, damping):
        self._make_kronecker_factors(grads_list)
        self._setup_damping(damping)


class FullyConnectedKFACReduceFB(FullyConnectedKFACBasicFB):
    """KFAC-reduce block of a dense layer over `[B, ..., in]` (Eschenhagen et
    al. 2023, §3.2): per example, `â = mean_p ã_p` and `ĝ = Σ_p g_p` over its
    positions, `A = E_n[â âᵀ]`, `G = E_n[ĝ ĝᵀ]`, `F ≈ A ⊗ G`. Exact for a deep
    linear network whose positions are summed or averaged before the loss;
    with `[B, in]` inputs it is `FullyConnectedKFACBasicFB`."""

    _reduce = True
