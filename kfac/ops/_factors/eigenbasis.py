"""EKFAC's eigenvalue factors (George et al. 2018, "Fast Approximate Natural
Gradient Descent in a Kronecker-factored Eigenbasis").

K-FAC's block `A ⊗ G = (U_A ⊗ U_G) diag(λ_A ⊗ λ_G) (U_A ⊗ U_G)ᵀ` keeps the
Kronecker eigenbasis but scales each direction by a product of factor
eigenvalues. EKFAC keeps the basis and replaces the scaling by the second
moment of the per-example gradients in that basis, the best diagonal there:

    s = (1/B) Σ_b (U_Aᵀ G_b U_G) ∘ (U_Aᵀ G_b U_G),

`G_b` the mat2d form (`[in (+1), out]`) of example `b`'s weight gradient. The
bases are the `eigenbasis` variables of the layer's two Kronecker factors
(refreshed on the inverse schedule); `s` is this factor's `cov`, a moving
average updated on the covariance schedule with every guard of `FisherFactor`
(non-finite estimates skipped and counted, zero-debiasing). The moving average
runs on across basis refreshes: entries estimated in the previous basis fade
out at the covariance decay.

Per-example gradients are never formed for a dense layer: `G_b = ã_b g_bᵀ`, so
`U_Aᵀ G_b U_G = (U_Aᵀ ã_b)(U_Gᵀ g_b)ᵀ` and its square is the outer product of
the squared projections, `s = (ã' ∘ ã')ᵀ (g' ∘ g') / B`. A convolution's
`G_b = Σ_loc p̃_{b,loc} g_{b,loc}ᵀ` sums over locations, so the projected
per-example gradients `[B, in', out]` are formed (as by the diagonal conv
factor), from the projected patches and output gradients.
"""

import abc

import tensorflow.compat.v1 as tf

from kfac.ops._factors import diagonal
from kfac.ops._factors import layer_data
from kfac.ops._factors import naming
from kfac.ops._factors import positions
from kfac.ops._factors import statistics
from kfac.ops._factors.fully_connected import as_rows


class EigenbasisDiagonalFactor(layer_data.InputsAndGradients, diagonal.DiagonalFactor):
    """`s`, the per-example gradient second moments in the Kronecker eigenbasis.

    Shape `[in (+1), out]`, the mat2d form. Subclasses give `_projected_inputs`
    and `_new_scaling`.

    Args:
      inputs: per tower, the layer inputs.
      outputs_grads: per source, per tower, the pre-activation gradients.
      input_factor: the layer's input Kronecker factor (basis `U_A`).
      output_factor: the layer's output Kronecker factor (basis `U_G`).
      has_bias: whether a ones entry is appended to the inputs (patches).
    """

    _SCOPE_PREFIX = None  # set by subclasses

    def __init__(
        self, inputs, outputs_grads, input_factor, output_factor, has_bias=False
    ):
        self._inputs = inputs
        self._outputs_grads = outputs_grads
        self._input_factor = input_factor
        self._output_factor = output_factor
        self._has_bias = has_bias
        self._projected_by_tower = {}
        super(EigenbasisDiagonalFactor, self).__init__()

    @property
    def _var_scope(self):
        return self._SCOPE_PREFIX + naming.scope_string_from_params(
            tuple(self._inputs) + tuple(statistics.flatten(self._outputs_grads))
        )

    @property
    def _cov_shape(self):
        return [
            statistics.static_size(self._input_factor.cov_shape, 0),
            statistics.static_size(self._output_factor.cov_shape, 0),
        ]

    @property
    def _dtype(self):
        return self._outputs_grads[0][0].dtype

    def _bases(self):
        """`(U_A, U_G)`; ValueError before the factors' eigenbases exist."""
        bases = (self._input_factor.eigenbasis, self._output_factor.eigenbasis)
        if any(basis is None for basis in bases):
            raise ValueError(
                "%s: the Kronecker factors have no eigenbasis variables; register the "
                "block's matrix powers (register_matpower) and instantiate the inverse "
                "variables first." % self.name
            )
        return bases

    def make_covariance_update_op(self, ema_decay, non_finite_policy="skip"):
        # The projected inputs are shared by every source of a tower.
        self._projected_by_tower = {}
        return super(EigenbasisDiagonalFactor, self).make_covariance_update_op(
            ema_decay, non_finite_policy=non_finite_policy
        )

    def _tower_projection(self, tower):
        if tower not in self._projected_by_tower:
            basis = self._bases()[0]
            with statistics.place_on_device(self._get_data_device(tower)):
                self._projected_by_tower[tower] = self._projected_inputs(tower, basis)
        return self._projected_by_tower[tower]

    def _compute_new_cov(self, source, tower):
        outputs_grad = tf.convert_to_tensor(self._outputs_grads[source][tower])
        return self._new_scaling(
            self._tower_projection(tower), outputs_grad, self._bases()[1]
        )

    @abc.abstractmethod
    def _projected_inputs(self, tower, input_basis):
        """The tower's inputs in the basis `U_A`, in the layout `_new_scaling`
        takes."""

    @abc.abstractmethod
    def _new_scaling(self, projected_inputs, outputs_grad, output_basis):
        """The mini-batch estimate of `s` for one source and tower."""


class FullyConnectedEigenbasisFactor(EigenbasisDiagonalFactor):
    """`s` of a fully connected layer: `(ã'∘ã')ᵀ(g'∘g') / N`, `ã' = U_Aᵀ ã`,
    `g' = U_Gᵀ g`, over the `N` rows (inputs `[B, ..., in]` are flattened to
    rows, each an example, as for the layer's Kronecker factors).

    With row weights `w` (port addition; per tower, the leading shape of the
    inputs): `Σ_rows [w>0] (ã'∘ã')ᵀ(g'∘g') / Σ w`. A per-example gradient's
    square is weighted once, by the loss's weights that its output gradients
    carry (`positions`); the layer's weights mask and count the rows.
    """

    _SCOPE_PREFIX = "ff_ekfacfc_"

    def __init__(
        self,
        inputs,
        outputs_grads,
        input_factor,
        output_factor,
        has_bias=False,
        weights=None,
    ):
        self._weights = weights
        super(FullyConnectedEigenbasisFactor, self).__init__(
            inputs, outputs_grads, input_factor, output_factor, has_bias
        )

    @property
    def _var_scope(self):
        name = super(FullyConnectedEigenbasisFactor, self)._var_scope
        if self._weights is not None:
            name += positions.weights_suffix(self._weights)
        return name

    def _flat_weights(self, tower):
        return tf.reshape(tf.convert_to_tensor(self._weights[tower]), [-1])

    def _projected_inputs(self, tower, input_basis):
        rows = as_rows(self._inputs[tower])
        if self._has_bias:
            rows = statistics.append_homog(rows)
        projected = tf.square(tf.matmul(rows, input_basis))
        if self._weights is None:
            return projected
        mask = tf.cast(self._flat_weights(tower) > 0, projected.dtype)
        return projected * mask[:, None]

    def _compute_new_cov(self, source, tower):
        new_cov = super(FullyConnectedEigenbasisFactor, self)._compute_new_cov(
            source, tower
        )
        if self._weights is None:
            return new_cov
        weights = tf.cast(self._flat_weights(tower), new_cov.dtype)
        num_rows = tf.cast(tf.size(weights), new_cov.dtype)
        return new_cov * (num_rows / tf.reduce_sum(weights))

    def _new_scaling(self, projected_inputs, outputs_grad, output_basis):
        squared_grads = tf.square(tf.matmul(as_rows(outputs_grad), output_basis))
        new_cov = tf.matmul(projected_inputs, squared_grads, transpose_a=True)
        return new_cov / tf.cast(tf.shape(projected_inputs)[0], new_cov.dtype)


class ConvEigenbasisFactor(EigenbasisDiagonalFactor):
    """`s` of a convolution: `(1/B) Σ_b (Σ_loc p̃' g'ᵀ)²`, the patches `p̃`
    extracted as by the input factor (`ConvInputKroneckerFactor.extract_patches`,
    so in the order of `U_A`), `p̃' = U_Aᵀ p̃` and `g' = U_Gᵀ g`."""

    _SCOPE_PREFIX = "ff_ekfacconv_"

    def _projected_inputs(self, tower, input_basis):
        inputs = tf.convert_to_tensor(self._inputs[tower])
        patches = self._input_factor.extract_patches(inputs)
        patch_size = statistics.static_size(input_basis.shape, 0) - int(self._has_bias)
        batch_size = tf.shape(inputs)[0]
        patches = tf.reshape(patches, [batch_size, -1, patch_size])
        if self._has_bias:
            ones = tf.ones_like(patches[:, :, :1])
            patches = tf.concat([patches, ones], axis=2)
        return tf.einsum("blk,kj->blj", patches, input_basis)

    def _new_scaling(self, projected_inputs, outputs_grad, output_basis):
        batch_size = tf.shape(outputs_grad)[0]
        out_channels = statistics.static_size(output_basis.shape, 0)
        grads = tf.reshape(outputs_grad, [batch_size, -1, out_channels])
        projected_grads = tf.einsum("blo,op->blp", grads, output_basis)
        per_example = tf.einsum("blk,blp->bkp", projected_inputs, projected_grads)
        new_cov = tf.reduce_sum(tf.square(per_example), axis=0)
        return new_cov / tf.cast(batch_size, new_cov.dtype)
