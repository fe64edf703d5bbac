"""Input factor of embedding layers (a fully connected layer on one-hot inputs).

For one-hot inputs `a`, `E[a aᵀ]` is diagonal: entry `v` is the frequency of
id `v`. It is computed from id counts, never from a dense `[B, vocab]` one-hot
matrix, so the cost is `O(B·k + vocab)`.
"""

import tensorflow.compat.v1 as tf

from kfac.ops._factors import diagonal
from kfac.ops._factors import layer_data
from kfac.ops._factors import naming
from kfac.ops._factors import positions


class EmbeddingInputKroneckerFactor(layer_data.InputsByTower, diagonal.DiagonalFactor):
    """`Ĉ_v = (number of occurrences of id v in the tower) / B`, shape `[vocab_size]`.

    With position weights `w` (port addition): `Ĉ_v = Σ w·[id = v] / Σ_b u_b`,
    `u_b` the mean of the non-zero weights of row `b` (1 for a row with a real
    id under a 0/1 mask), so padded ids count for nothing and padded rows are
    not examples.

    Args:
      input_ids: per tower, an integer Tensor of ids `[B]` or `[B, k]` (each
        example's `k` ids are summed, as one-hot rows).
      vocab_size: number of embedding rows.
      dtype: dtype of the cov variable (default float32).
      weights: per tower, weights of the rows `[B]` or of the ids `[B, k]`
        (`[B]` broadcasts over `k`), or None.

    Raises (when the update op is built):
      ValueError: ids of rank > 2.
    """

    def __init__(self, input_ids, vocab_size, dtype=None, weights=None):
        self._input_ids = input_ids
        self._vocab_size = naming.to_python_scalar(vocab_size)
        self._cov_dtype = tf.as_dtype(dtype) if dtype is not None else tf.float32
        self._weights = weights
        super(EmbeddingInputKroneckerFactor, self).__init__()

    @property
    def _tower_inputs(self):
        return self._input_ids

    @property
    def _var_scope(self):
        name = "ff_diag_embedding_" + naming.scope_string_from_params(self._input_ids)
        if self._weights is not None:
            name += positions.weights_suffix(self._weights)
        return name

    @property
    def _cov_shape(self):
        return [self._vocab_size]

    @property
    def _dtype(self):
        return self._cov_dtype

    def _compute_new_cov(self, source, tower):
        del source  # One source: the layer inputs.
        input_ids = tf.convert_to_tensor(self._input_ids[tower])
        if input_ids.shape.ndims is not None and input_ids.shape.ndims > 2:
            raise ValueError(
                "EmbeddingInputKroneckerFactor: input ids must have rank <= 2, "
                "got rank %d (shape %s)." % (input_ids.shape.ndims, input_ids.shape)
            )
        flat_ids = tf.reshape(input_ids, [-1])
        if self._weights is not None:
            return self._weighted_frequencies(input_ids, flat_ids, tower)
        # Entries of one-hot rows are 0 or 1, so summing them (not their
        # squares) gives the second moment.
        counts = tf.math.unsorted_segment_sum(
            tf.ones_like(flat_ids, dtype=self._dtype), flat_ids, self._vocab_size
        )
        return counts / tf.cast(tf.shape(input_ids)[0], self._dtype)

    def _weighted_frequencies(self, input_ids, flat_ids, tower):
        weights = tf.cast(tf.convert_to_tensor(self._weights[tower]), self._dtype)
        if input_ids.shape.ndims == 2 and weights.shape.ndims == 1:
            weights = tf.broadcast_to(weights[:, None], tf.shape(input_ids))
        counts = tf.math.unsorted_segment_sum(
            tf.reshape(weights, [-1]), flat_ids, self._vocab_size
        )
        rows = tf.reshape(weights, [tf.shape(input_ids)[0], -1])
        return counts / tf.reduce_sum(positions.example_weights(rows))
