"""Loss registrations: the `register_*_predictive_distribution` methods of
`LayerCollection`, their towers and the checks of their arguments.

A targets tensor shaped unlike the distribution's inputs would broadcast into
a wrong loss without any error, so its static shape is compared at
registration; per-case weights are checked by `weights.broadcast_weights`.
"""

import numbers

import numpy as np

from kfac.ops._losses.logits import CategoricalLogitsNegativeLogProbLoss
from kfac.ops._losses.logits import MultiBernoulliNegativeLogProbLoss
from kfac.ops._losses.normal import NormalMeanNegativeLogProbLoss
from kfac.ops._registration.common import VARIABLE_SCOPE
from kfac.ops._registration.common import reuse_existing
from kfac.ops._registration.shapes import describe
from kfac.ops._registration.shapes import error
from kfac.ops._registration.shapes import static_shape
from kfac.ops._registration.shapes import warn
from kfac.ops._registration.weights import broadcast_weights


def check_targets(
    method: str, inputs_name: str, inputs, targets, per_row=False, strict=True
):
    """Targets of a predictive distribution shaped like its inputs.

    The loss adds `log p(targets | inputs)` entry by entry, so a targets tensor
    of another shape would broadcast into a wrong loss without any error.
    `per_row`: one target per row (class ids of `[batch, num_classes]` logits).
    With `strict=False` a mismatch is a `RegistrationWarning` (categorical
    targets: the original's own tests pass one-hot-shaped ones that are never
    evaluated).

    Raises:
      ValueError: the static shapes are incompatible (both are named).
    """
    if targets is None:
        return
    inputs_shape, targets_shape = static_shape(inputs), static_shape(targets)
    if inputs_shape.rank is None or targets_shape.rank is None:
        return
    expected = inputs_shape[:-1] if per_row and inputs_shape.rank else inputs_shape
    if not expected.is_compatible_with(targets_shape):
        message = (
            "`targets` has shape {} but `{}` has shape {}: expected targets of "
            "shape {}.".format(
                describe(targets_shape),
                inputs_name,
                describe(inputs_shape),
                describe(expected),
            )
        )
        if strict:
            raise error(method, message)
        warn(
            method,
            message + ' `total_loss()` and "empirical" estimation would be wrong.',
        )


def check_variance(method: str, var) -> None:
    """The variance of a normal predictive distribution: a positive scalar."""
    shape = static_shape(var)
    if shape.rank not in (None, 0):
        raise error(
            method, "`var` must be a scalar; got shape {}.".format(describe(shape))
        )
    if isinstance(var, (numbers.Real, np.number)) and not var > 0:
        raise error(method, "`var` must be positive; got {!r}.".format(var))


def add_loss_tower(loss_dict, name: str, loss, reuse) -> None:
    """Appends `loss` to `loss_dict[name]` (reuse) or starts `loss_dict[name]`.

    Raises:
      KeyError: reuse without an existing loss `name`, or a new loss whose
        `name` is taken.
    """
    if reuse_existing(reuse, name in loss_dict):
        if name not in loss_dict:
            raise KeyError(
                "Unable to find loss function named {}. Register a new loss "
                "function with reuse=False.".format(name)
            )
        loss_dict[name].append(loss)
    else:
        if name in loss_dict:
            raise KeyError(
                "Loss function named {} already exists. Set reuse=True to "
                "append another tower.".format(name)
            )
        loss_dict[name] = [loss]


def _register_distribution(
    layer_collection, kind, loss_class, data, data_name, weights, name, reuse, **args
):
    """Builds `loss_class(data, weights=..., **args)` and registers it.

    `kind` names the registration (`register_<kind>`) and is the base of the
    loss name; the weights are checked against `data` (argument `data_name`).
    """
    method = "register_" + kind
    weights = broadcast_weights(method, "weights", weights, data, data_name)
    loss = loss_class(data, weights=weights, **args)
    layer_collection.register_loss_function(loss, data, kind, name=name, reuse=reuse)


def register_categorical_predictive_distribution(
    layer_collection,
    logits,
    seed=None,
    targets=None,
    name=None,
    reuse=VARIABLE_SCOPE,
    weights=None,
) -> None:
    """Registers p(y|x) = softmax(logits) (`CategoricalLogitsNegativeLogProbLoss`).

    Args:
      logits: `[batch, num_classes]` logits.
      seed: seed for sampling targets ("gradients" estimation mode).
      targets: integer class ids `[batch]`, for `total_loss` / "empirical".
      name, reuse: see `LayerCollection.register_loss_function`.
      weights: (port addition) None, or non-negative per-case weights `v` of
        the leading dims of `logits` or a prefix of them (bool masks become
        0/1): the loss becomes `−Σ_b v_b log p(y_b|x_b)` and its Fisher
        `v_b F_b` per case (see `loss_functions`).

    Raises:
      ValueError: `weights` of the wrong shape, or constant weights that are
        negative or not finite (other tensors are checked when read:
        InvalidArgumentError).
    """
    method = "register_categorical_predictive_distribution"
    check_targets(method, "logits", logits, targets, per_row=True, strict=False)
    _register_distribution(
        layer_collection,
        "categorical_predictive_distribution",
        CategoricalLogitsNegativeLogProbLoss,
        logits,
        "logits",
        weights,
        name,
        reuse,
        targets=targets,
        seed=seed,
    )


def register_normal_predictive_distribution(
    layer_collection,
    mean,
    var=0.5,
    seed=None,
    targets=None,
    name=None,
    reuse=VARIABLE_SCOPE,
    weights=None,
) -> None:
    """Registers p(y|x) = N(mean, var·I) (`NormalMeanNegativeLogProbLoss`).

    `var=0.5` matches the loss Σ(target − mean)²; use `var=1.0` for
    ½Σ(target − mean)².

    Args:
      mean: `[batch, dim]` predicted means.
      var: positive scalar variance (ValueError otherwise).
      seed, targets, name, reuse, weights: as for the categorical
        distribution (targets are real `[batch, dim]`, weights `[batch]`).
    """
    method = "register_normal_predictive_distribution"
    check_variance(method, var)
    check_targets(method, "mean", mean, targets)
    _register_distribution(
        layer_collection,
        "normal_predictive_distribution",
        NormalMeanNegativeLogProbLoss,
        mean,
        "mean",
        weights,
        name,
        reuse,
        var=var,
        targets=targets,
        seed=seed,
    )


def register_multi_bernoulli_predictive_distribution(
    layer_collection,
    logits,
    seed=None,
    targets=None,
    name=None,
    reuse=VARIABLE_SCOPE,
    weights=None,
) -> None:
    """Registers independent Bernoullis p = sigmoid(logits) per output.

    Args:
      logits: `[batch, dim]` logits; targets are 0/1 `[batch, dim]`.
      seed, targets, name, reuse, weights: as for the categorical
        distribution (weights `[batch]`).
    """
    method = "register_multi_bernoulli_predictive_distribution"
    check_targets(method, "logits", logits, targets)
    _register_distribution(
        layer_collection,
        "multi_bernoulli_predictive_distribution",
        MultiBernoulliNegativeLogProbLoss,
        logits,
        "logits",
        weights,
        name,
        reuse,
        targets=targets,
        seed=seed,
    )
