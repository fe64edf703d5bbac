"""`tf.compat.v1.summary` ops of a K-FAC optimizer's curvature health."""

from typing import Any
from typing import Optional
from typing import Sequence

import tensorflow.compat.v1 as tf

from kfac.ops._factors import diagonal
from kfac.ops._summaries import health as health_lib
from kfac.ops._summaries import spectrum


def make_summary_ops(optimizer: Any, collections: Optional[Sequence[str]] = None,
                     per_layer: bool = True, histograms: bool = False,
                     num_iterations: int = spectrum.DEFAULT_NUM_ITERATIONS
                     ) -> tf.Tensor:
    """Scalar (and optional histogram) summaries of `optimizer`'s state.

    One scalar summary per entry of `health.curvature_health` (its doc lists
    the tags and their meaning), tagged by exactly that name (the tags do not
    depend on the graph's name scopes: one `ScalarSummary` op holds them all);
    with `histograms`, one histogram of each factor's diagonal
    (`kfac/<layer>/<factor>/diagonal`). Build them after the optimizer's ops.

    Cost when run: reading the variables, plus `num_iterations` matrix-vector
    products per dense factor (the Lanczos estimates of the extreme
    eigenvalues); no forward or backward pass.

    Args:
      optimizer: a `KfacOptimizer` whose ops were made.
      collections: graph collections the summaries are added to; None means
        `[tf.GraphKeys.SUMMARIES]` (what `tf.summary.merge_all`, Estimator and
        `MonitoredTrainingSession` write), `[]` none.
      per_layer: include the per-layer and per-factor scalars.
      histograms: include the factors' diagonals as histograms.
      num_iterations: Lanczos steps per dense factor.

    Returns:
      The merged summary (a string Tensor) to run, e.g. every N steps, and pass
      to a `tf.summary.FileWriter`.
    """
    if collections is None:
        collections = [tf.GraphKeys.SUMMARIES]
    scalars = health_lib.curvature_health(optimizer, per_layer, num_iterations)
    with tf.name_scope("kfac_summaries"):
        summaries = [tf.raw_ops.ScalarSummary(
            tags=tf.constant(list(scalars.keys())),
            values=tf.stack(list(scalars.values())), name="scalars")]
        if histograms:
            for params, block in optimizer.layer_collection.fisher_blocks.items():
                for role, factor, _ in health_lib.block_factors(block):
                    cov = tf.convert_to_tensor(factor.get_cov())
                    if isinstance(factor, diagonal.DiagonalFactor):
                        values = tf.reshape(cov, [-1])
                    else:
                        values = tf.linalg.diag_part(cov)
                    tag = "{}/{}/{}/diagonal".format(
                        health_lib.PREFIX, health_lib.layer_name(params), role)
                    summaries.append(tf.raw_ops.HistogramSummary(
                        tag=tag, values=values, name="histogram"))
        for summary in summaries:
            for collection in collections:
                tf.add_to_collection(collection, summary)
        return tf.summary.merge(summaries, collections=[])
