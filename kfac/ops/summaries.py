"""Observability of K-FAC training: TensorBoard summaries, health, a hook.

* `make_summary_ops(optimizer, collections=None, per_layer=True,
  histograms=False, num_iterations=32)`: `tf.compat.v1.summary` ops of the
  optimizer's scalars (damping, ρ, quadratic-model coefficients, learning rate,
  clipping coefficient, skipped steps) and of each layer's curvature (traces,
  norms, extreme eigenvalues and damped condition numbers of the factors,
  gradient and preconditioned-gradient norms and their cosine, the pi split);
  also `KfacOptimizer.make_summary_ops`.
* `curvature_health(optimizer, per_layer=True, num_iterations=32)`: the same
  quantities as `{tag: float32 scalar Tensor}`.
* `KfacHook`: a `SessionRunHook` that runs the covariance and inverse updates
  on a schedule and logs a one-line health report.
* `extreme_eigenvalues(matrix, num_iterations=32)`: the Lanczos estimates used
  for dense factors, with their accuracy bounds.

Port addition (the original had none of these).
"""

from kfac.ops._summaries.health import curvature_health
from kfac.ops._summaries.hook import KfacHook
from kfac.ops._summaries.hook import format_report
from kfac.ops._summaries.spectrum import DEFAULT_NUM_ITERATIONS
from kfac.ops._summaries.spectrum import extreme_eigenvalues
from kfac.ops._summaries.summary_ops import make_summary_ops

__all__ = [
    "DEFAULT_NUM_ITERATIONS",
    "KfacHook",
    "curvature_health",
    "extreme_eigenvalues",
    "format_report",
    "make_summary_ops",
]
