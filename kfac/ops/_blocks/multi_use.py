"""Multi-use Kronecker blocks with independent uses (RNN steps, shared layers).

The uses of a layer within one example are treated as independent: the factor
statistics are averaged over uses and batch, and the block is
`F ≈ num_uses·(A ⊗ G)` (Martens, Ba & Grosse 2018, "independence" baseline);
the damping is normalised by the number of uses (and locations, for convs).
"""

from kfac.ops._blocks.conv import ConvKFCMixin
from kfac.ops._blocks.kronecker import KroneckerProductFB
from kfac.ops._blocks.towers import InputOutputMultiTowerMultiUse
from kfac.ops._blocks.towers import with_position_statistics
from kfac.ops._factors import fully_connected as fc_factors
from kfac.ops._factors import multi_use as multi_use_factors


class FullyConnectedMultiIndepFB(InputOutputMultiTowerMultiUse, KroneckerProductFB):
    """Fully connected layer used `num_uses` times per example: `F ≈ n·(A ⊗ G)`.

    `A`, `G` are the FC Kronecker factors averaged over all uses and examples.
    """

    def __init__(self, layer_collection, has_bias=False, num_uses=None):
        """Creates the block.

        Args:
            layer_collection: owner that builds/shares the factors.
            has_bias: whether the parameters are `(weights [in, out], bias [out])`.
            num_uses: uses per example; inferred from list inputs/outputs when None.
        """
        self._has_bias = has_bias
        super(FullyConnectedMultiIndepFB, self).__init__(
            layer_collection=layer_collection, num_uses=num_uses
        )

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        self._input_factor, self._output_factor = make_multi_use_factors(
            self, inputs, grads_list
        )
        self._setup_damping(damping, normalization=self._num_uses)

    @property
    def _renorm_coeff(self):
        return float(self._num_uses)


def make_multi_use_factors(block, inputs, grads_list):
    """`(A, G)`: the use-major `FullyConnectedMultiKF` factors of a multi-use
    dense block (weighted by the towers' weights, if any)."""
    num_uses = block._num_uses
    input_statistics = block._position_statistics(
        "inputs", "use_major", num_uses=num_uses
    )
    output_statistics = block._position_statistics(
        "outputs", "use_major", num_uses=num_uses
    )
    input_factor = block._factors.make_or_get_factor(
        multi_use_factors.FullyConnectedMultiKF,
        with_position_statistics(
            ((inputs,), num_uses, block._has_bias), input_statistics
        ),
    )
    output_factor = block._factors.make_or_get_factor(
        multi_use_factors.FullyConnectedMultiKF,
        with_position_statistics((grads_list, num_uses), output_statistics, (False,)),
    )
    return input_factor, output_factor


class FullyConnectedMultiReduceFB(FullyConnectedMultiIndepFB):
    """KFAC-reduce block of a dense layer used `num_uses` times per example
    (Eschenhagen et al. 2023): per example, `â = mean_t ã_t`, `ĝ = Σ_t g_t`,
    `F ≈ E_n[â âᵀ] ⊗ E_n[ĝ ĝᵀ]` (no `num_uses` factor, no damping
    normalisation). Outer products over `B` rows instead of `num_uses·B`."""

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        input_statistics = self._position_statistics(
            "inputs", "use_major", reduce=True, num_uses=self._num_uses
        )
        output_statistics = self._position_statistics(
            "outputs", "use_major", reduce=True, num_uses=self._num_uses
        )
        self._input_factor = self._factors.make_or_get_factor(
            fc_factors.FullyConnectedKroneckerFactor,
            ((inputs,), self._has_bias, input_statistics),
        )
        self._output_factor = self._factors.make_or_get_factor(
            fc_factors.FullyConnectedKroneckerFactor,
            (grads_list, False, output_statistics),
        )
        self._setup_damping(damping)

    @property
    def _renorm_coeff(self):
        return 1.0


class ConvKFCBasicMultiIndepFB(
    ConvKFCMixin, InputOutputMultiTowerMultiUse, KroneckerProductFB
):
    """Convolution used `num_uses` times per example: `F ≈ T·n·(Ω ⊗ Γ)`.

    Arguments: `ConvKFCBasicFB`'s, then `num_uses` (`ConvKFCMixin` first among
    the bases, so that they keep that order when given by position).

    `T` is the number of locations, taken from the first processed input (the
    original read `.shape` of the whole tuple and crashed; fixed here).
    """

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        self._make_conv_factors(inputs, grads_list)
        self._setup_damping(damping, normalization=self._num_locations * self._num_uses)

    @property
    def _renorm_coeff(self):
        return self._num_locations * self._num_uses
