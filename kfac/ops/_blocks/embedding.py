"""Kronecker blocks of embedding layers (`tf.gather` of rows of a `[vocab, dim]` table).

With one-hot inputs the input factor `A` is diagonal (the frequency of each id),
so `F ≈ c·(diag(A) ⊗ G)`. Gradients usually arrive as `IndexedSlices`; products
then only touch the gathered rows and never densify the table.
"""

import tensorflow.compat.v1 as tf

from kfac.ops._blocks.kronecker import KroneckerProductFB
from kfac.ops._blocks.towers import InputOutputMultiTower
from kfac.ops._blocks.towers import InputOutputMultiTowerMultiUse
from kfac.ops._blocks.towers import with_position_statistics
from kfac.ops._factors import embedding as embedding_factors
from kfac.ops._factors import fully_connected as fc_factors
from kfac.ops._factors import multi_use as multi_use_factors


class DiagonalInputKroneckerMixin(object):
    """Products and pi for Kronecker blocks with a diagonal `[vocab]` input factor."""

    def _make_input_factor(self, inputs, grads_list):
        """The `[vocab]` id-frequency factor, in the dtype of the output gradients.

        (The original made it float32 whatever the model, which broke float64
        models; float32 keeps the original's factor arguments.)
        """
        dtype = tf.as_dtype(grads_list[0][0].dtype).base_dtype
        args = (inputs, self._vocab_size)
        weights = self._process_weights()
        if weights is not None:
            args += (dtype, weights)
        elif dtype != tf.float32:
            args += (dtype,)
        return self._factors.make_or_get_factor(
            embedding_factors.EmbeddingInputKroneckerFactor, args
        )

    def _input_cov_for_pi(self):
        # The diagonal itself: its trace is its sum, no [vocab, vocab] matrix.
        return tf.reshape(self._input_factor.get_cov_var(), [-1])

    def _left_multiply_input_factor(self, mat, exp):
        """`(diag(A) + d_A)^exp · mat` for `IndexedSlices` or a dense `[vocab, dim]`.

        The original required `IndexedSlices`; a dense table-shaped vector is
        handled by broadcasting the diagonal over its columns (§12 fix), through
        the factor's sparse path with every row selected.
        """
        if isinstance(mat, tf.IndexedSlices):
            return self._input_factor.left_multiply_matpower(
                mat, exp, self._input_damping_func
            )
        mat = tf.convert_to_tensor(mat)
        dense_shape = tf.shape(mat, out_type=tf.int64)
        all_rows = tf.IndexedSlices(mat, tf.range(dense_shape[0]), dense_shape)
        product = self._input_factor.left_multiply_matpower(
            all_rows, exp, self._input_damping_func
        )
        return product.values


class EmbeddingKFACFB(
    InputOutputMultiTower, DiagonalInputKroneckerMixin, KroneckerProductFB
):
    """K-FAC block of an embedding layer: `F ≈ diag(A) ⊗ G` (no bias).

    `A_v` = frequency of id `v` per example, `G = E[g gᵀ]` of the output gradients.
    """

    def __init__(self, layer_collection, vocab_size):
        """Creates the block.

        Args:
            layer_collection: owner that builds/shares the factors.
            vocab_size: number of rows of the embedding table.
        """
        self._vocab_size = vocab_size
        super(EmbeddingKFACFB, self).__init__(layer_collection)

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        self._input_factor = self._make_input_factor(inputs, grads_list)
        output_statistics = self._position_statistics("outputs", "rows")
        self._output_factor = self._factors.make_or_get_factor(
            fc_factors.FullyConnectedKroneckerFactor,
            with_position_statistics((grads_list,), output_statistics, (False,)),
        )
        self._setup_damping(damping)


class EmbeddingKFACMultiIndepFB(
    InputOutputMultiTowerMultiUse, DiagonalInputKroneckerMixin, KroneckerProductFB
):
    """Embedding used `n = num_uses` times per example: `F ≈ n·(diag(A) ⊗ G)`.

    The uses are treated as independent; statistics are averaged over uses.
    """

    def __init__(self, layer_collection, vocab_size, num_uses=None):
        """Creates the block.

        Args:
            layer_collection: owner that builds/shares the factors.
            vocab_size: number of rows of the embedding table.
            num_uses: uses per example; inferred from list inputs/outputs when None.
        """
        self._vocab_size = vocab_size
        super(EmbeddingKFACMultiIndepFB, self).__init__(
            layer_collection=layer_collection, num_uses=num_uses
        )

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        self._input_factor = self._make_input_factor(inputs, grads_list)
        output_statistics = self._position_statistics(
            "outputs", "use_major", num_uses=self._num_uses
        )
        self._output_factor = self._factors.make_or_get_factor(
            multi_use_factors.FullyConnectedMultiKF,
            with_position_statistics(
                (grads_list, self._num_uses), output_statistics, (False,)
            ),
        )
        self._setup_damping(damping, normalization=self._num_uses)

    @property
    def _renorm_coeff(self):
        return float(self._num_uses)
