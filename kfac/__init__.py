"""K-FAC: Kronecker-Factored Approximate Curvature for tf.compat.v1 graph mode.

A port of `tf.contrib.kfac`: code written against it runs after changing
`import tensorflow.contrib.kfac as kfac` into `import kfac`.
"""

from kfac.ops import curvature_matrix_vector_products
from kfac.ops import estimator
from kfac.ops import fisher_blocks
from kfac.ops import fisher_factors
from kfac.ops import graph_search
from kfac.ops import layer_collection
from kfac.ops import loss_functions
from kfac.ops import op_queue
from kfac.ops import optimizer
from kfac.ops import periodic_inv_cov_update_kfac_opt
from kfac.ops import placement
from kfac.ops import summaries  # port addition
from kfac.ops import utils
from kfac.ops._config import KfacConfig  # port addition
from kfac.ops.graph_search import AmbiguousRegistrationError  # port addition
from kfac.ops.summaries import KfacHook  # port addition

LayerCollection = getattr(layer_collection, "LayerCollection", None)
KfacOptimizer = getattr(optimizer, "KfacOptimizer", None)
PeriodicInvCovUpdateKfacOpt = (
    periodic_inv_cov_update_kfac_opt.PeriodicInvCovUpdateKfacOpt)

__all__ = [
    "curvature_matrix_vector_products",
    "estimator",
    "fisher_blocks",
    "fisher_factors",
    "graph_search",
    "layer_collection",
    "loss_functions",
    "op_queue",
    "optimizer",
    "periodic_inv_cov_update_kfac_opt",
    "placement",
    "summaries",
    "utils",
    "LayerCollection",
    "KfacOptimizer",
    "PeriodicInvCovUpdateKfacOpt",
    "KfacConfig",
    "AmbiguousRegistrationError",
    "KfacHook",
]
