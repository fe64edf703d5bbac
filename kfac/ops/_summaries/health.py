"""The curvature state of a K-FAC optimizer as named float32 scalar Tensors.

`curvature_health(optimizer)` returns an ordered `{name: scalar}`; the summary
ops, `KfacHook`'s report and the examples' health plot all read it. Names
(`<layer>` is the op name of the block's first variable, e.g. "fc1/weights";
`<factor>` is "input_factor" (A) and "output_factor" (G) of a Kronecker block,
"factor" of a one-factor block; an EKFAC block adds "eigenvalue_factor", the
scaling in its eigenbasis):

* optimizer: `kfac/learning_rate`, `kfac/damping`, `kfac/skipped_steps`,
  `kfac/skipped_factor_updates`; with damping adaptation `kfac/rho`,
  `kfac/predicted_loss_change` and `kfac/actual_loss_change` (those of the
  last `ρ`), `kfac/q_model_change` (the last step's prediction); with the
  quadratic model `kfac/qmodel_alpha`, `kfac/qmodel_mu`; with a norm
  constraint `kfac/norm_constraint_coefficient`.
* per layer, from the last training step: `kfac/<layer>/gradient_norm`,
  `.../preconditioned_gradient_norm` and `.../gradient_cosine` (between the
  gradient and the preconditioned direction, `step_statistics`); for a
  Kronecker block `.../pi`, `√(d_A / d_G)` of the damping split.
* per factor, from its current moving average `C` and its damping share `d`:
  `kfac/<layer>/<factor>/trace`, `.../frobenius_norm`, `.../min_eigenvalue`,
  `.../max_eigenvalue`, `.../damping` and `.../condition_number`
  `(λ_max + d) / (λ_min + d)`. Diagonal factors are exact; dense ones use the
  Lanczos estimates of `spectrum.extreme_eigenvalues` (bounds in its doc).
  Under the adaptive inverse schedule (`invert_every="adaptive"`) also
  `.../inverse_updates`, the inverses computed so far.
"""

import collections
from typing import Any
from typing import Iterator
from typing import List
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops._factors import diagonal
from kfac.ops._summaries import spectrum
from kfac.ops._utils.containers import ensure_sequence

PREFIX = "kfac"
CONDITION_NUMBER = "condition_number"


def layer_name(params: Any) -> str:
    """The name of a block in the summaries: its first variable's op name."""
    return ensure_sequence(params)[0].op.name


def _undamped() -> float:
    return 0.0


def block_factors(block: Any) -> Iterator[Tuple[str, Any, Any]]:
    """`(role, factor, damping function)` of each factor of `block`.

    An EKFAC block's bases come from its Kronecker factors, reported undamped;
    its damping is that of the scaling `s` ("eigenvalue_factor").
    """
    if hasattr(block, "_eigenvalue_factor"):
        yield "input_factor", block._input_factor, _undamped
        yield "output_factor", block._output_factor, _undamped
        yield "eigenvalue_factor", block._eigenvalue_factor, block._damping_func
    elif hasattr(block, "_input_factor"):
        yield "input_factor", block._input_factor, block._input_damping_func
        yield "output_factor", block._output_factor, block._output_damping_func
    elif hasattr(block, "_factor"):
        yield "factor", block._factor, block._damping_func


def _float(value: Any) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(value), tf.float32)


def factor_health(factor: Any, damping: Any,
                  num_iterations: int = spectrum.DEFAULT_NUM_ITERATIONS
                  ) -> "collections.OrderedDict[str, tf.Tensor]":
    """Trace, Frobenius norm, extreme eigenvalues, damping and damped condition
    number of one factor (module doc), float32 scalars."""
    is_diagonal = isinstance(factor, diagonal.DiagonalFactor)
    # A diagonal factor's `get_cov()` is the dense `diag(cov)`: `[n, n]` for n
    # parameters (785,000² floats for a 1000x784 layer); its entries suffice.
    cov = factor.get_cov_var() if is_diagonal else factor.get_cov()
    if cov is None:
        raise ValueError("The factor {} has no covariance variable yet: make the "
                         "optimizer's ops (minimize, make_ops_and_vars, ...) before "
                         "its summaries.".format(factor.name))
    cov = tf.convert_to_tensor(cov)
    damping = tf.cast(damping, cov.dtype)
    if is_diagonal:
        values = tf.reshape(cov, [-1])
        trace = tf.reduce_sum(values)
        minimum, maximum = tf.reduce_min(values), tf.reduce_max(values)
    else:
        trace = tf.linalg.trace(cov)
        minimum, maximum = spectrum.extreme_eigenvalues(cov, num_iterations)
    health = collections.OrderedDict()
    health["trace"] = trace
    health["frobenius_norm"] = tf.norm(tf.reshape(cov, [-1]))
    health["min_eigenvalue"] = minimum
    health["max_eigenvalue"] = maximum
    health["damping"] = damping
    health[CONDITION_NUMBER] = (maximum + damping) / (minimum + damping)
    return collections.OrderedDict(
        (name, _float(value)) for name, value in health.items())


def _gradient_health(products: tf.Tensor) -> "collections.OrderedDict[str, tf.Tensor]":
    """Norms and cosine from one row `[⟨g,g⟩, ⟨p,p⟩, ⟨g,p⟩]`."""
    health = collections.OrderedDict()
    health["gradient_norm"] = tf.sqrt(products[0])
    health["preconditioned_gradient_norm"] = tf.sqrt(products[1])
    health["gradient_cosine"] = tf.math.divide_no_nan(
        products[2], tf.sqrt(products[0] * products[1]))
    return health


def optimizer_scalars(optimizer: Any) -> "collections.OrderedDict[str, tf.Tensor]":
    """The optimizer-wide scalars (module doc)."""
    scalars = collections.OrderedDict()
    scalars["learning_rate"] = optimizer.learning_rate_tensor
    scalars["damping"] = optimizer.damping
    scalars["skipped_steps"] = optimizer.skipped_steps
    scalars["skipped_factor_updates"] = optimizer.skipped_factor_updates
    adaptation = optimizer.damping_adaptation
    if adaptation.enabled:
        scalars["rho"] = adaptation.rho
        scalars["predicted_loss_change"] = adaptation.loss_changes[0]
        scalars["actual_loss_change"] = adaptation.loss_changes[1]
        scalars["q_model_change"] = adaptation.q_model_change
    statistics = optimizer.step_statistics
    if statistics.qmodel_coefficients is not None:
        scalars["qmodel_alpha"] = statistics.qmodel_coefficients[0]
        scalars["qmodel_mu"] = statistics.qmodel_coefficients[1]
    if statistics.norm_constraint_coefficient is not None:
        scalars["norm_constraint_coefficient"] = statistics.norm_constraint_coefficient
    return collections.OrderedDict(
        (PREFIX + "/" + name, _float(value)) for name, value in scalars.items())


def layer_scalars(optimizer: Any, num_iterations: int = spectrum.DEFAULT_NUM_ITERATIONS
                  ) -> "collections.OrderedDict[str, tf.Tensor]":
    """The per-layer and per-factor scalars of every block (module doc)."""
    statistics = optimizer.step_statistics
    rows = {}
    if statistics.gradient_products is not None:
        rows = {id(params): row for row, params in enumerate(statistics.block_params)}
    scalars = collections.OrderedDict()
    for params, block in optimizer.layer_collection.fisher_blocks.items():
        prefix = "{}/{}/".format(PREFIX, layer_name(params))
        if id(params) in rows:
            products = statistics.gradient_products[rows[id(params)]]
            for name, value in _gradient_health(products).items():
                scalars[prefix + name] = value
        factors = list(block_factors(block))
        damping_values = {role: damping_func() for role, _, damping_func in factors}
        if hasattr(block, "_input_damping_func"):
            scalars[prefix + "pi"] = _float(tf.sqrt(
                damping_values["input_factor"]
                / tf.cast(damping_values["output_factor"],
                          tf.convert_to_tensor(damping_values["input_factor"]).dtype)))
        counts = getattr(optimizer, "inverse_update_counts", None) or {}
        for role, factor, _ in factors:
            health = factor_health(factor, damping_values[role], num_iterations)
            if factor.name in counts:
                health["inverse_updates"] = _float(counts[factor.name])
            for name, value in health.items():
                scalars["{}{}/{}".format(prefix, role, name)] = value
    return scalars


def curvature_health(optimizer: Any, per_layer: bool = True,
                     num_iterations: int = spectrum.DEFAULT_NUM_ITERATIONS
                     ) -> "collections.OrderedDict[str, tf.Tensor]":
    """`{name: float32 scalar}` of the optimizer and (per_layer) of each layer.

    Raises:
      ValueError: the optimizer's ops (and so its factor variables) were not
        made yet.
    """
    if not optimizer.estimator.made_vars():
        raise ValueError("The optimizer's factor variables do not exist yet: build "
                         "its training op (minimize) or make its ops "
                         "(make_ops_and_vars, ...) before asking for summaries.")
    with tf.name_scope("kfac_health"):
        scalars = optimizer_scalars(optimizer)
        if per_layer:
            scalars.update(layer_scalars(optimizer, num_iterations))
    return scalars


def condition_numbers(scalars: "collections.OrderedDict[str, Any]"
                      ) -> List[Tuple[str, Any]]:
    """`[(layer/factor name, value)]` of the condition numbers in `scalars`."""
    suffix = "/" + CONDITION_NUMBER
    start = len(PREFIX) + 1
    return [(name[start:-len(suffix)], value) for name, value in scalars.items()
            if name.endswith(suffix)]
