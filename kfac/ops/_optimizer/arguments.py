"""Validation of the `KfacOptimizer` arguments, where the user hands them over.

Range checks apply to Python/numpy numbers only: Tensors (e.g. a decayed learning
rate) and variables are accepted as they are, their value being unknown here.
"""

import inspect
import math
import numbers
import warnings
from typing import Any
from typing import Sequence

import tensorflow.compat.v1 as tf

MOMENTUM_TYPES = ("regular", "adam", "qmodel")


MINIMIZE_SIGNATURE = inspect.signature(tf.train.Optimizer.minimize)
COMPUTE_GRADIENTS_SIGNATURE = inspect.signature(tf.train.Optimizer.compute_gradients)


def bind_with_var_list(signature: inspect.Signature, optimizer: Any,
                       args: Sequence[Any], kwargs: dict) -> dict:
    """The arguments of a base-class call (`minimize`, `compute_gradients`) as
    keywords, `var_list` defaulting to `optimizer.variables`.

    Raises:
      TypeError: as the call itself would, for unknown or missing arguments.
      ValueError: if `var_list` is not exactly `optimizer.variables`.
    """
    call = dict(signature.bind(optimizer, *args, **kwargs).arguments)
    del call["self"]
    if call.get("var_list") is None:
        call["var_list"] = list(optimizer.variables)
    check_var_list("var_list", call["var_list"], optimizer.variables)
    return call


def check_global_step_for_adaptation(call: dict) -> None:
    """KeyError unless the bound `minimize` call has a `global_step` (damping
    adaptation counts its interval with it)."""
    if call.get("global_step") is None:
        raise KeyError("global_step needs to be passed to optimizer.minimize if "
                       "damping parameter is adapted.")


def is_number(value: Any) -> bool:
    """True for Python/numpy real scalars (bools excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


LINT_MODES = ("warn", "raise")


def check_lint(lint: Any):
    """The linter mode: None (off: False, None, "off"), "warn" (also True) or
    "raise"; ValueError naming any other value."""
    if lint is None or lint is False or lint == "off":
        return None
    if lint is True:
        return "warn"
    if isinstance(lint, str) and lint in LINT_MODES:
        return lint
    raise ValueError(
        "Unsupported lint {!r}: must be False/None/'off', True/'warn' or "
        "'raise'.".format(lint))


def check_momentum_type(momentum_type: Any) -> str:
    """Lower-cased `momentum_type`; ValueError unless one of `MOMENTUM_TYPES`."""
    if (not isinstance(momentum_type, str)
            or momentum_type.lower() not in MOMENTUM_TYPES):
        raise ValueError("Unsupported momentum_type {!r}: must be one of {}.".format(
            momentum_type, list(MOMENTUM_TYPES)))
    return momentum_type.lower()


def check_estimation_mode(estimation_mode: Any, modes: Sequence[str]) -> None:
    """ValueError unless `estimation_mode` is one of `modes` (checked here rather
    than when the first op is made, so the error points at the constructor)."""
    if not (isinstance(estimation_mode, str) and estimation_mode in modes):
        raise ValueError("Unrecognized value {!r} for estimation_mode; expected one "
                         "of {}.".format(estimation_mode, list(modes)))


def check_positive(name: str, value: Any) -> None:
    if is_number(value) and not 0 < value < math.inf:
        raise ValueError("{} must be > 0 and finite; got {!r}.".format(name, value))


def check_non_negative(name: str, value: Any) -> None:
    if is_number(value) and not 0 <= value < math.inf:
        raise ValueError("{} must be non-negative and finite; got {!r}.".format(
            name, value))


def check_in_unit_interval(name: str, value: Any, include_one: bool) -> None:
    """`value` in [0, 1] (or [0, 1) when `include_one` is False)."""
    if not is_number(value):
        return
    in_range = 0 <= value <= 1 if include_one else 0 <= value < 1
    if not in_range:
        raise ValueError("{} must be in [0, 1{}; got {!r}.".format(
            name, "]" if include_one else ")", value))


def check_optimizer_arguments(learning_rate: Any, cov_ema_decay: Any, damping: Any,
                              layer_collection: Any, momentum: Any,
                              momentum_type: str, norm_constraint: Any,
                              batch_size: Any) -> None:
    """All constructor checks after `momentum_type` (ValueError naming the argument)."""
    if norm_constraint is not None and momentum_type != "regular":
        raise ValueError(
            "norm_constraint (update clipping) is only supported with momentum_type "
            "'regular'; got momentum_type {!r}.".format(momentum_type))
    if momentum_type not in ("regular", "adam") and not (
            is_number(momentum) and momentum == 0):
        raise ValueError(
            "momentum must be 0 with momentum_type {!r} (only 'regular' and 'adam' "
            "use it); got momentum={!r}.".format(momentum_type, momentum))
    if momentum_type == "qmodel" and batch_size is None:
        raise ValueError("batch_size is required with momentum_type 'qmodel' (the "
                         "quadratic model uses the mini-batch Fisher); got None.")
    if layer_collection is None:
        raise ValueError("layer_collection must be a LayerCollection; got None.")
    if is_number(learning_rate) and learning_rate == 0:
        # The original ran it (every step leaves the variables unchanged).
        warnings.warn("KfacOptimizer: learning_rate is 0, so no step changes the "
                      "variables.", UserWarning, stacklevel=4)
    elif not callable(learning_rate):
        check_positive("learning_rate", learning_rate)
    check_in_unit_interval("cov_ema_decay", cov_ema_decay, include_one=True)
    check_non_negative("damping", damping)
    check_in_unit_interval("momentum", momentum, include_one=False)
    if norm_constraint is not None:
        check_positive("norm_constraint", norm_constraint)
    if batch_size is not None:
        check_positive("batch_size", batch_size)


def check_damping_adaptation_arguments(min_damping: Any, damping_adaptation_decay: Any,
                                       damping_adaptation_interval: Any,
                                       loss_fn: Any) -> None:
    """Checks of `set_damping_adaptation_params` (ValueError naming the argument)."""
    if not callable(loss_fn):
        raise ValueError("loss_fn must be callable (prev_train_batch -> loss); got "
                         "{!r}.".format(loss_fn))
    check_non_negative("min_damping", min_damping)
    if is_number(damping_adaptation_decay) and not 0 < damping_adaptation_decay <= 1:
        raise ValueError("damping_adaptation_decay must be in (0, 1]; got {!r}.".format(
            damping_adaptation_decay))
    if (not isinstance(damping_adaptation_interval, numbers.Integral)
            or isinstance(damping_adaptation_interval, bool)
            or damping_adaptation_interval < 1):
        raise ValueError("damping_adaptation_interval must be a positive integer; got "
                         "{!r}.".format(damping_adaptation_interval))


def describe_mismatch(name: str, given: Sequence[Any], expected: Sequence[Any]) -> str:
    """Message naming the variables missing from / extra in `given` (by identity)."""
    given_ids = {id(var) for var in given}
    expected_ids = {id(var) for var in expected}
    missing = [getattr(var, "name", var) for var in expected
               if id(var) not in given_ids]
    extra = [getattr(var, "name", var) for var in given if id(var) not in expected_ids]
    return ("{} must contain exactly the variables whose Fisher is estimated (the "
            "optimizer's var_list); missing: {}, not estimated: {}.".format(
                name, missing, extra))


def same_variables(given: Sequence[Any], expected: Sequence[Any]) -> bool:
    """Set equality by object identity (variables are identity-keyed in graph mode)."""
    return {id(var) for var in given} == {id(var) for var in expected}


def check_var_list(name: str, given: Sequence[Any], expected: Sequence[Any]) -> None:
    """ValueError (`describe_mismatch`) unless `given` holds exactly `expected`."""
    if not same_variables(given, expected):
        raise ValueError(describe_mismatch(name, given, expected))
