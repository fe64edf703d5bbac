"""Static-shape and dtype checks shared by the registration checks of every kind.

Each check compares static shapes and names the argument, the shape that
arrived and the one expected. Unknown dimensions (e.g. a `None` batch size)
and objects without a static shape are never an error. A failed check is a
ValueError (`error`), or, where the original accepted the registration, a
`RegistrationWarning` attributed to the user's register_* call (`warn`).
"""

import os
import sys
import warnings

import numpy as np
import tensorflow.compat.v1 as tf


def static_shape(value) -> tf.TensorShape:
    """Static shape of a Tensor/Variable/array/PartitionedTensor, else unknown."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return tf.TensorShape(None)
    try:
        return tf.TensorShape(shape)
    except (TypeError, ValueError):
        return tf.TensorShape(None)


def dims(shape: tf.TensorShape, rank: int) -> list:
    """The dimensions of `shape` (None where unknown), `rank` Nones if unknown."""
    return [None] * rank if shape.rank is None else shape.as_list()


def describe(shape: tf.TensorShape) -> str:
    return "unknown" if shape.rank is None else str(tuple(shape.as_list()))


class RegistrationWarning(UserWarning):
    """A registration the original accepted whose shapes or dtypes look wrong."""


def error(method: str, message: str) -> ValueError:
    return ValueError("{}: {}".format(method, message))


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _caller_stacklevel() -> int:
    """The `stacklevel` of the first frame outside `kfac/ops` (the user's call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


def warn_registration(message: str) -> None:
    """Issues a `RegistrationWarning` attributed to the user's register_* call."""
    warnings.warn(message, RegistrationWarning, stacklevel=_caller_stacklevel())


def warn(method: str, message: str) -> None:
    warn_registration("{}: {}".format(method, message))


def check_rank(method, argument, value, ranks, layout, strict=True) -> tf.TensorShape:
    """Returns the static shape of `value` after checking its rank is in `ranks`.

    `ranks` is an int, a sequence of ints, or `(minimum, None)` for "at least".
    With `strict=False` a wrong rank is a `RegistrationWarning` and the shape
    returned is unknown, so that no later check reads its dimensions.
    """
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    at_least = len(ranks) == 2 and ranks[1] is None
    shape = static_shape(value)
    if shape.rank is None:
        return shape
    if at_least:
        accepted, expected = shape.rank >= ranks[0], "at least {}".format(ranks[0])
    else:
        accepted, expected = shape.rank in ranks, " or ".join(map(str, ranks))
    if accepted:
        return shape
    message = "`{}` must have rank {} (shape {}); got shape {}.".format(
        argument, expected, layout, describe(shape)
    )
    if strict:
        raise error(method, message)
    warn(method, message + " Registered anyway (as the original did).")
    return tf.TensorShape(None)


def check_dim(
    method, argument, shape, axis, expected, layout, reason, strict=True
) -> None:
    """Checks `shape[axis] == expected` when both are known.

    A mismatch is a ValueError, or a `RegistrationWarning` with `strict=False`.
    """
    if shape.rank is None or expected is None:
        return
    actual = shape.as_list()[axis]
    if actual is not None and actual != expected:
        message = "`{}` has shape {}; expected shape {} {}.".format(
            argument, describe(shape), layout, reason
        )
        if strict:
            raise error(method, message)
        warn(method, message + " Registered anyway (as the original did).")


def num_rows(shape: tf.TensorShape):
    """`prod(shape[:-1])`, the rows a dense layer sees, or None if unknown."""
    if shape.rank is None or shape.rank < 1:
        return None
    leading = shape.as_list()[:-1]
    return None if None in leading else int(np.prod(leading, dtype=np.int64))


def _first_dim(shape: tf.TensorShape):
    """Dimension 0 of `shape`, or None if unknown (or a scalar)."""
    return shape.as_list()[0] if shape.rank else None


def _check_agree(method, first, second, measure, what) -> None:
    """ValueError if `measure` of the two (argument name, shape) pairs is known
    for both and differs; `what` names the measure in the message."""
    (name_a, shape_a), (name_b, shape_b) = first, second
    value_a, value_b = measure(shape_a), measure(shape_b)
    if value_a is not None and value_b is not None and value_a != value_b:
        raise error(
            method,
            "`{}` (shape {}) and `{}` (shape {}) must have the same {}.".format(
                name_a, describe(shape_a), name_b, describe(shape_b), what
            ),
        )


def check_same_rows(method, first, second) -> None:
    """Dense layers: `first`/`second` (argument name, shape) have as many rows.

    Rows are all dimensions but the last (each row is one input of the
    layer), so `[B, T, in]` inputs pair with `[B, T, out]` or `[B·T, out]`
    outputs; with equal ranks dimension 0 must also agree.
    """
    if first[1].rank is not None and first[1].rank == second[1].rank:
        check_same_batch(method, first, second)
    _check_agree(
        method,
        first,
        second,
        num_rows,
        "number of rows (product of all dimensions but the last)",
    )


def check_same_batch(method, first, second) -> None:
    """`first`/`second` are (argument name, shape) pairs that share dimension 0."""
    _check_agree(method, first, second, _first_dim, "batch size (dimension 0)")


def base_dtype(value):
    """The base dtype of `value` (ref dtypes stripped), or None."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return None
    try:
        return tf.as_dtype(dtype).base_dtype
    except TypeError:
        return None


def check_same_dtype(method: str, named_values) -> None:
    """ValueError unless all `(argument, value)` pairs with a dtype share it."""
    dtypes = [(name, base_dtype(value)) for name, value in named_values]
    dtypes = [(name, dtype) for name, dtype in dtypes if dtype is not None]
    if len({dtype for _, dtype in dtypes}) > 1:
        raise error(
            method,
            "params, inputs and outputs must share one dtype; got {}.".format(
                ", ".join("`{}` {}".format(name, dtype.name) for name, dtype in dtypes)
            ),
        )


def check_layer_dtype(method: str, params, inputs, outputs, names) -> None:
    """`check_same_dtype` of a layer's weights, bias, inputs and outputs.

    `names` are the argument names of `inputs` and `outputs` (they differ per
    use of a *_multi registration).
    """
    weights, bias = split_params(method, params)
    check_same_dtype(
        method,
        [
            ("params", weights),
            ("params[1]", bias),
            (names[0], inputs),
            (names[1], outputs),
        ],
    )


def split_params(method: str, params):
    """`(weights, bias)` from `params`; bias is None unless given as `(w, b)`.

    A 1-tuple `(w,)` is accepted: the blocks decide bias presence by
    `isinstance(params, (tuple, list))` (API.md §1), and original code uses it.
    """
    if not isinstance(params, (tuple, list)):
        return params, None
    if len(params) not in (1, 2):
        raise error(
            method,
            "`params` must be a weight tensor or a (weights, bias) pair; got a "
            "{} of length {}.".format(type(params).__name__, len(params)),
        )
    return params[0], (params[1] if len(params) == 2 else None)


def check_bias(method, bias, num_outputs, weights_shape) -> None:
    """A bias holds one entry per output: `[out]`, `[1, out]`, `[out, 1]`, ...

    Products return it in the shape it was given (`mat2d_to_layer_params`).
    """
    if bias is None:
        return
    shape = static_shape(bias)
    if shape.rank is None:
        return
    entries = shape.as_list()
    non_unit = [d for d in entries if d != 1]
    size = None if None in entries else int(np.prod(entries, dtype=np.int64))
    if len(non_unit) > 1 or (None not in (size, num_outputs) and size != num_outputs):
        raise error(
            method,
            "`params[1]` has shape {}; expected shape [{out}] (or [1, {out}], "
            "[{out}, 1]: one entry per output) to match weights of shape "
            "{}.".format(
                describe(shape),
                describe(weights_shape),
                out="out" if num_outputs is None else num_outputs,
            ),
        )


def check_model_dtype(params, registered_variables) -> None:
    """One floating dtype for every registered parameter of a LayerCollection.

    The optimizer combines all layers in sums (inner products of the quadratic
    model and of the norm constraint) and every layer's factors follow its
    parameters' dtype, so float32 and float64 models both work but a mix does
    not.

    A parameter that is not floating (the original's tests register integer
    constants as bookkeeping) cannot be trained: a `RegistrationWarning`.

    Raises:
      ValueError: a floating parameter of `params` has a dtype other than that
        of the already registered floating variables (both are named).
    """
    for param in params if isinstance(params, (tuple, list)) else (params,):
        dtype = base_dtype(param)
        if dtype is None:
            continue
        name = getattr(param, "name", repr(param))
        if not dtype.is_floating:
            warn_registration(
                "LayerCollection: `params` {} has dtype {}; only floating "
                "parameters can be trained or preconditioned.".format(name, dtype.name)
            )
            continue
        for other in registered_variables:
            other_dtype = base_dtype(other)
            if other_dtype is None or not other_dtype.is_floating:
                continue
            # All registered variables already share one dtype: compare with one.
            if other_dtype != dtype:
                raise ValueError(
                    "LayerCollection: all registered parameters must share one "
                    "dtype (mixed-precision models are not supported); `params` {} "
                    "has dtype {} but the already registered {} has dtype {}.".format(
                        name,
                        dtype.name,
                        getattr(other, "name", other),
                        other_dtype.name,
                    )
                )
            break
