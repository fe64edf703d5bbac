"""Diagonal blocks of layers: the Fisher diagonal laid out like the mat2d form.

The factor holds one entry per parameter, the mean squared per-example gradient
of that parameter, shaped like the mat2d form `V` (`[in(+1), out]`) of a vector,
so `multiply_matpower(v, exp) = (diag(F) + d)^exp ∘ V`.
"""

from kfac.ops._blocks import damping as damping_lib
from kfac.ops._blocks.base import FisherBlock
from kfac.ops._blocks.towers import FullyConnectedMultiTower
from kfac.ops._factors import fully_connected as fc_factors
from kfac.ops._utils import reshape


class Mat2dDiagonalFB(FisherBlock):
    """Products with a diagonal factor `_factor` shaped like the mat2d form."""

    def register_matpower(self, exp):
        # Diagonal powers are computed when multiplying; nothing to maintain.
        pass

    def multiply_matpower(self, vector, exp):
        """`(diag(F) + d)^exp ∘ V`, `V` the mat2d form of `vector`; same format out."""
        mat = reshape.layer_params_to_mat2d(vector)
        out = self._factor.left_multiply_matpower(mat, exp, self._damping_func)
        return reshape.mat2d_to_layer_params(vector, out)

    def full_fisher_block(self):
        """The undamped diagonal block as a dense matrix (row-major `vec` of mat2d)."""
        return self._factor.get_cov()


class FullyConnectedDiagonalFB(FullyConnectedMultiTower, Mat2dDiagonalFB):
    """Diagonal Fisher of a fully connected layer.

    `diag(F) = (1/B) Σ_b outer(ã_b, g_b)²` (entry-wise square), `ã_b` the input
    row (with a trailing 1 for the bias) and `g_b` the pre-activation gradient.
    """

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        self._factor = self._factors.make_or_get_factor(
            fc_factors.FullyConnectedDiagonalFactor,
            (inputs, grads_list, self._has_bias),
        )
        self._damping_func = damping_lib.constant_damping_func(damping)
