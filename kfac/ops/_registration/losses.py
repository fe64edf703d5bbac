"""Loss registrations: their towers and the checks of their arguments.

A targets tensor shaped unlike the distribution's inputs would broadcast into
a wrong loss without any error, so its static shape is compared at
registration.
"""

import numbers

import numpy as np

from kfac.ops._registration.common import reuse_existing
from kfac.ops._registration.shapes import describe
from kfac.ops._registration.shapes import error
from kfac.ops._registration.shapes import static_shape
from kfac.ops._registration.shapes import warn


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
