"""Positions of a shared weight: masks, weights, and KFAC-expand / KFAC-reduce.

A weight applied at several *positions* of one example (the time steps of a
sequence, the locations of a convolution, the uses of a `*_multi` layer) sees
one input row `ã_p` and one output-gradient row `g_p` per position. Eschenhagen
et al. (2023, "Kronecker-Factored Approximate Curvature for Modern Neural
Network Architectures", §3) define two Kronecker approximations of its block:

* **expand**: every position is an independent example,
  `A = (1/P) Σ_p ã_p ã_pᵀ` and `G = (1/P) Σ_p g_p g_pᵀ` over the `P` positions
  of the batch, `F ≈ (P/N)·A ⊗ G` for `N` examples (the original's
  `kron_indep` with `P/N = num_uses`, and the KFC convolution block with
  `P/N = T` locations);
* **reduce**: positions are aggregated per example first,
  `â_n = mean_p ã_{n,p}`, `ĝ_n = Σ_p g_{n,p}`, `A = (1/N) Σ_n â_n â_nᵀ`,
  `G = (1/N) Σ_n ĝ_n ĝ_nᵀ`, `F ≈ A ⊗ G` (outer products over `N` rows instead
  of `P`: cheaper).

Masks and weights. A position weight `w_p ≥ 0` (0 for padding) weights the
*input* statistics and counts the positions; the output gradients already carry
the loss's own weights (a weighted loss scales its curvature sources by `√v`),
so `w` only masks them (a zero-weight position contributes nothing) and sets
their normaliser. With the example weight `u_n` = the mean of `w` over the
example's positions of non-zero weight (1 for a 0/1 mask with a real position,
0 for an all-padding example):

* expand: `A = Σ_p w_p ã ãᵀ / Σ_p w_p`, `G = Σ_p [w_p>0] g gᵀ / (P_n Σ_n u_n)`
  with `P_n` the positions per example of the layout (1 when every row is its
  own example), so that `(P/N)·A ⊗ G` becomes `(Σw / Σu)·A ⊗ G`: the expand
  block of the unpadded batch, whatever the lengths;
* reduce: `â_n = Σ_p w ã / Σ_p w`, `ĝ_n = Σ_p [w_p>0] g_p`,
  `A = Σ_n u_n â â ᵀ / Σ_n u_n`, `G = Σ_n [u_n>0] ĝ ĝᵀ / Σ_n u_n`.

Without weights every formula reduces to the unweighted one, computed by the
same ops as before weights existed.

Layouts of a factor's data (`[..., n]`, the last axis the features):

* `"rows"`: every leading position is its own example (a dense layer, or a
  dense layer over `[batch, T, n]` registered with `register_fully_connected`,
  whose loss is per position);
* `"examples_first"`: `[examples, positions..., n]` (convolution patches and
  gradients, a 3-D dense layer under "kron_reduce");
* `"use_major"`: `[num_uses·examples, n]` folded use-major, as the `*_multi`
  registrations fold their uses.
"""

from typing import Optional

import tensorflow.compat.v1 as tf

from kfac.ops._factors import naming

ROLES = ("inputs", "outputs")
LAYOUTS = ("rows", "examples_first", "use_major")


def _grouped(tensor, layout: str, num_uses: Optional[int]) -> tf.Tensor:
    """`[examples, positions, ...]` view of position weights in `layout` (for
    "examples_first" and "use_major" also of data `[..., n]`)."""
    tensor = tf.convert_to_tensor(tensor)
    if layout == "use_major":
        tail = tf.shape(tensor)[1:]
        shape = tf.concat([[num_uses, -1], tail], axis=0)
        by_use = tf.reshape(tensor, shape)
        rank = tensor.shape.rank + 1
        return tf.transpose(by_use, [1, 0] + list(range(2, rank)))
    if layout == "examples_first":
        return tensor
    return tf.reshape(tensor, [-1, 1])  # "rows": one position per example


def weights_suffix(weights) -> str:
    """The variable-name suffix of a factor built with `weights` (per tower)."""
    return "_w_" + naming.scope_string_from_params(tuple(weights))


def scope_suffix(position_statistics) -> str:
    """What a factor appends to its name for `position_statistics` (None: "",
    so that unweighted expand factors keep their names)."""
    if position_statistics is None:
        return ""
    return position_statistics.scope_suffix()


def example_weights(grouped_weights: tf.Tensor) -> tf.Tensor:
    """`u [examples]` from position weights `[examples, positions]`: the mean
    of each example's non-zero weights (0 for an example without any)."""
    real = tf.cast(grouped_weights > 0, grouped_weights.dtype)
    return tf.math.divide_no_nan(
        tf.reduce_sum(grouped_weights, axis=1), tf.reduce_sum(real, axis=1)
    )


class PositionStatistics(object):
    """How one factor turns its data into weighted rows (see the module docstring).

    Compared by identity (a factor key): blocks build one per factor.

    Args:
      role: "inputs" (`ã`: rows weighted by `√w`, reduced by a weighted mean)
        or "outputs" (`g`: rows masked by `w > 0`, reduced by a sum).
      layout: "rows", "examples_first" or "use_major".
      weights: per tower of the factor, the position weights, shaped like the
        data's leading dims (`[num_uses·B]` for "use_major"), or None for all
        ones.
      reduce: KFAC-reduce instead of KFAC-expand.
      num_uses: positions per example of the "use_major" layout.
    """

    def __init__(self, role, layout, weights=None, reduce=False, num_uses=None):
        if role not in ROLES:
            raise ValueError("role must be one of %s, got %r." % (ROLES, role))
        if layout not in LAYOUTS:
            raise ValueError("layout must be one of %s, got %r." % (LAYOUTS, layout))
        if layout == "use_major" and num_uses is None:
            raise ValueError("the use_major layout needs num_uses.")
        if layout == "rows" and reduce:
            raise ValueError("reduce needs positions grouped by example, not rows.")
        self.role = role
        self.layout = layout
        self.weights = None if weights is None else tuple(weights)
        self.reduce = bool(reduce)
        self.num_uses = naming.to_python_scalar(num_uses)

    def scope_suffix(self) -> str:
        """Distinguishes the factor's variables from the unweighted/expand ones."""
        suffix = "_reduce" if self.reduce else ""
        if self.weights is not None:
            suffix += weights_suffix(self.weights)
        return suffix

    def _tower_weights(self, tower):
        return None if self.weights is None else self.weights[tower]

    def rows(self, data, tower: int):
        """`(rows [N, n], row_scale [N] or None, normalizer or None)` of one tower.

        The factor's statistic is `Σ_rows s² r rᵀ / normalizer` (`s` the row
        scale, applied to a homogeneous coordinate too); None means 1 and the
        row count, the unweighted statistic.

        Args:
          data: the tower's data `[..., n]` in this layout (a PartitionedTensor
            is concatenated).
          tower: the tower index (selects the weights).
        """
        data = tf.convert_to_tensor(data)
        size = tf.compat.dimension_value(data.shape[-1])
        weights = self._tower_weights(tower)
        if not self.reduce:
            rows = tf.reshape(data, [-1, size])
            if weights is None:
                return rows, None, None
            return self._expand_scale_and_normalizer(rows, weights)
        return self._reduced(data, size, weights)

    def _expand_scale_and_normalizer(self, rows, weights):
        flat_weights = tf.reshape(tf.convert_to_tensor(weights), [-1])
        if self.role == "inputs":
            return rows, tf.sqrt(flat_weights), tf.reduce_sum(flat_weights)
        mask = tf.cast(flat_weights > 0, rows.dtype)
        per_example, positions = self._example_weights(weights)
        return rows, mask, positions * tf.reduce_sum(per_example)

    def _example_weights(self, weights):
        """`(u [examples], positions per example)` from position weights."""
        grouped = _grouped(weights, self.layout, self.num_uses)
        grouped = tf.reshape(grouped, [tf.shape(grouped)[0], -1])
        positions = tf.cast(tf.shape(grouped)[1], grouped.dtype)
        return example_weights(grouped), positions

    def _reduced(self, data, size, weights):
        """Per-example aggregates: weighted means of inputs, masked sums of
        output gradients; rows `[examples, n]`."""
        grouped = _grouped(data, self.layout, self.num_uses)
        grouped = tf.reshape(grouped, [tf.shape(grouped)[0], -1, size])
        if weights is None:
            if self.role == "inputs":
                return tf.reduce_mean(grouped, axis=1), None, None
            return tf.reduce_sum(grouped, axis=1), None, None
        position_weights = _grouped(weights, self.layout, self.num_uses)
        position_weights = tf.reshape(
            position_weights, [tf.shape(position_weights)[0], -1]
        )
        per_example, _ = self._example_weights(weights)
        normalizer = tf.reduce_sum(per_example)
        if self.role == "inputs":
            totals = tf.reduce_sum(position_weights, axis=1, keepdims=True)
            weighted = tf.reduce_sum(grouped * position_weights[:, :, None], axis=1)
            means = tf.math.divide_no_nan(weighted, totals)
            return means, tf.sqrt(per_example), normalizer
        mask = tf.cast(position_weights > 0, grouped.dtype)
        sums = tf.reduce_sum(grouped * mask[:, :, None], axis=1)
        example_mask = tf.cast(per_example > 0, grouped.dtype)
        return sums, example_mask, normalizer


def scaled_rows(rows, row_scale):
    """`rows · s[:, None]` (unchanged when `s` is None)."""
    if row_scale is None:
        return rows
    return rows * row_scale[:, None]
