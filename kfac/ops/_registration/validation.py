"""Argument checks run when a layer or a loss is registered (API.md §6).

A wrong registration otherwise surfaces much later, as a shape error inside a
factor's covariance op. These checks compare the static shapes and dtypes of
`params`, `inputs` and `outputs` and name the offending argument, the shape
that arrived and the one expected. Unknown dimensions (e.g. a `None` batch
size) and objects without a static shape are never an error.

Two severities. A real inconsistency (widths that disagree, a bias with the
wrong number of entries, rows that cannot pair up, a mix of float dtypes) is a
ValueError. A shape the original accepted and that is only bookkeeping until
ops are built (a rank other than the layer kind's, e.g. scalar constants in
tests, a convolution output whose spatial size does not follow from its input,
integer parameters) is a `RegistrationWarning` naming the problem.
"""

import numbers

import numpy as np

from kfac.ops._registration.shapes import base_dtype
from kfac.ops._registration.shapes import check_bias
from kfac.ops._registration.shapes import check_dim
from kfac.ops._registration.shapes import check_rank
from kfac.ops._registration.shapes import check_same_batch
from kfac.ops._registration.shapes import check_same_dtype
from kfac.ops._registration.shapes import check_same_rows
from kfac.ops._registration.shapes import describe
from kfac.ops._registration.shapes import dims
from kfac.ops._registration.shapes import error
from kfac.ops._registration.shapes import split_params
from kfac.ops._registration.shapes import static_shape
from kfac.ops._registration.shapes import warn
from kfac.ops._registration.shapes import warn_registration

_PADDINGS = ("SAME", "VALID")
_CHANNELS_LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


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


# ----------------------------------------------------------------------------
# Fully connected layers.


def check_fully_connected_params(method: str, params):
    """Checks weights `[..., out]` (+ bias); returns `(in, out, shape)`.

    Weights of rank > 2 (a 1x1 convolution kernel `[1, 1, in, out]`) act on
    `in = prod(leading dims)` inputs, as `layer_params_to_mat2d` flattens them.
    Rank 0 or 1 is a warning (`in`/`out` unknown).
    """
    weights, bias = split_params(method, params)
    argument = "params[0]" if isinstance(params, (tuple, list)) else "params"
    shape = check_rank(method, argument, weights, (2, None), "[in, out]", strict=False)
    if shape.rank is None:
        fan_in = fan_out = None
    else:
        dims = shape.as_list()
        leading, fan_out = dims[:-1], dims[-1]
        fan_in = None if None in leading else int(np.prod(leading, dtype=np.int64))
    check_bias(method, bias, fan_out, shape)
    return fan_in, fan_out, shape


def check_fully_connected_io(
    method, params, inputs, outputs, names=("inputs", "outputs")
):
    """Checks inputs `[..., in]` and outputs `[..., out]` (pre-activations).

    Rank-2 `[batch, in]`/`[batch, out]` is the usual case; higher ranks are
    flattened to rows (every leading position is one input of the layer, as
    for a 1x1 convolution or a dense layer over `[batch, time, features]`).
    Either of `inputs`/`outputs` may be None to skip it.
    """
    fan_in, fan_out, weights_shape = check_fully_connected_params(method, params)
    reason = "to match weights of shape {}".format(describe(weights_shape))
    checked = []
    for name, value, size, symbol in (
        (names[0], inputs, fan_in, "in"),
        (names[1], outputs, fan_out, "out"),
    ):
        if value is None:
            continue
        shape = check_rank(
            method, name, value, (2, None), "[batch, {}]".format(symbol), strict=False
        )
        layout = "[batch, {}]" if shape.rank == 2 else "[batch, ..., {}]"
        check_dim(method, name, shape, -1, size, layout.format(size), reason)
        if shape.rank is not None:
            checked.append((name, shape))
    if len(checked) == 2:
        check_same_rows(method, *checked)
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


def _named_uses(name, values):
    """`[(argument name, tensor)]` for a list over uses or a single folded tensor."""
    if isinstance(values, (tuple, list)):
        return [("{}[{}]".format(name, i), value) for i, value in enumerate(values)]
    return [(name, values)]


def check_each_use(check, inputs, outputs) -> None:
    """Runs `check(inputs, outputs, names)` on each use of a *_multi registration.

    Inputs and outputs in the same format (both lists over uses, or both single
    folded tensors) are checked pairwise; otherwise each side on its own.
    """
    named_inputs = _named_uses("inputs", inputs)
    named_outputs = _named_uses("outputs", outputs)
    if isinstance(inputs, (tuple, list)) == isinstance(outputs, (tuple, list)):
        for (x_name, x), (y_name, y) in zip(named_inputs, named_outputs):
            check(x, y, (x_name, y_name))
        return
    for x_name, x in named_inputs:
        check(x, None, (x_name, "outputs"))
    for y_name, y in named_outputs:
        check(None, y, ("inputs", y_name))


# ----------------------------------------------------------------------------
# Convolutions.


def check_padding(method: str, padding) -> None:
    if padding not in _PADDINGS:
        raise error(
            method,
            "`padding` must be one of {}; got {!r}.".format(list(_PADDINGS), padding),
        )


def check_data_format(method: str, data_format, spatial_rank) -> None:
    """Only channels-last layouts (or None) are supported by the conv factors.

    With `spatial_rank` None any "N...C" layout string is accepted.
    """
    expected = _CHANNELS_LAST.get(spatial_rank, "N...C")
    if spatial_rank is None and isinstance(data_format, str):
        if data_format.startswith("N") and data_format.endswith("C"):
            return
    if data_format is not None and data_format != expected:
        raise error(
            method,
            "`data_format` must be None or {!r} (channels last); got {!r}.".format(
                expected, data_format
            ),
        )


def _is_int_list(values) -> bool:
    return isinstance(values, (tuple, list)) and all(
        isinstance(v, (numbers.Integral, np.integer)) and v > 0 for v in values
    )


def check_full_strides(method: str, argument: str, values, allow_none: bool) -> None:
    """Checks 4-entry strides/dilations `[1, s_h, s_w, 1]` as for `tf.nn.conv2d`."""
    if values is None and allow_none:
        return
    if not (_is_int_list(values) and len(values) == 4 and values[0] == values[3] == 1):
        raise error(
            method,
            "`{}` must be a list of 4 positive ints [1, h, w, 1]; got {!r}.".format(
                argument, values
            ),
        )


def check_spatial_list(method: str, argument: str, values, spatial_rank: int) -> None:
    """Checks None or `spatial_rank` positive ints (as for `tf.nn.convolution`)."""
    if values is None:
        return
    if not (_is_int_list(values) and len(values) == spatial_rank):
        raise error(
            method,
            "`{}` must be None or a list of {} positive ints (spatial dimensions "
            "only); got {!r}.".format(argument, spatial_rank, values),
        )


def conv_spatial_rank(method: str, params, inputs):
    """Spatial dimensions from the filter (or inputs) rank; None if unknown."""
    weights, _ = split_params(method, params)
    for argument, value in (("params", weights), ("inputs", inputs)):
        shape = static_shape(value)
        if shape.rank is not None:
            if shape.rank < 3:
                raise error(
                    method,
                    "`{}` must have rank >= 3 for a convolution; got shape {}.".format(
                        argument, describe(shape)
                    ),
                )
            return shape.rank - 2
    return None


def _expected_output_size(in_size, kernel, stride, dilation, padding):
    if None in (in_size, kernel):
        return None
    if padding == "SAME":
        return -(-in_size // stride)
    return -(-(in_size - (kernel - 1) * dilation) // stride)


def check_convolution_io(
    method,
    params,
    inputs,
    outputs,
    padding,
    spatial_strides=None,
    spatial_dilations=None,
    spatial_rank=None,
    depthwise=False,
    names=("inputs", "outputs"),
) -> None:
    """Checks a channels-last convolution's filter, bias, inputs and outputs.

    Filter `[*kernel, cin, cout]` (depthwise: `[kh, kw, cin, m]` with `cout =
    cin·m`), bias `[cout]`, inputs `[B, *spatial, cin]`, outputs
    `[B, *spatial_out, cout]` with the spatial output size implied by the
    padding, strides and dilations. `inputs` or `outputs` may be None.
    `spatial_rank` None means: infer it from the filter or inputs rank.
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
    if spatial_rank is None:
        spatial_rank = conv_spatial_rank(method, params, inputs)
        if spatial_rank is None:
            return
    rank = spatial_rank + 2
    argument = "params[0]" if isinstance(params, (tuple, list)) else "params"
    layout = (
        "[kh, kw, in_channels, channel_multiplier]"
        if depthwise
        else ("[*kernel_size, in_channels, out_channels]")
    )
    filter_shape = check_rank(method, argument, weights, rank, layout)
    filter_dims = dims(filter_shape, rank)
    kernel, in_channels = filter_dims[:spatial_rank], filter_dims[-2]
    out_channels = filter_dims[-1]
    if depthwise:
        out_channels = (
            None if None in filter_dims[-2:] else in_channels * filter_dims[-1]
        )
    check_bias(method, bias, out_channels, filter_shape)
    reason = "for a filter of shape {}".format(describe(filter_shape))
    strides = spatial_strides or [1] * spatial_rank
    dilations = spatial_dilations or [1] * spatial_rank
    input_dims = None
    checked = []
    if inputs is not None:
        shape = check_rank(
            method, names[0], inputs, rank, "[batch, *spatial, in_channels]"
        )
        check_dim(
            method,
            names[0],
            shape,
            -1,
            in_channels,
            "[batch, ..., {}]".format(in_channels),
            reason,
        )
        input_dims = dims(shape, rank)
        checked.append((names[0], shape))
    if outputs is not None:
        shape = check_rank(
            method, names[1], outputs, rank, "[batch, *spatial, out_channels]"
        )
        expected = [None] * rank
        expected[-1] = out_channels
        if input_dims is not None:
            expected[1:-1] = [
                _expected_output_size(size, k, s, d, padding)
                for size, k, s, d in zip(input_dims[1:-1], kernel, strides, dilations)
            ]
        for axis in range(1, rank):
            check_dim(
                method,
                names[1],
                shape,
                axis,
                expected[axis],
                "[batch, {}]".format(
                    ", ".join("?" if d is None else str(d) for d in expected[1:])
                ),
                "{} and {} of shape {} ({} padding)".format(
                    reason, names[0], describe(static_shape(inputs)), padding
                ),
                # The channels must agree; a spatial size that does not follow
                # from the inputs is what the original accepted (its tests
                # register such shapes), so only a warning.
                strict=axis == rank - 1,
            )
        checked.append((names[1], shape))
    if len(checked) == 2:
        check_same_batch(method, *checked)


# ----------------------------------------------------------------------------
# Embeddings, generic layers, losses.


def check_embedding_io(
    method, params, inputs, outputs, names=("inputs", "outputs")
) -> int:
    """Checks params `[vocab, dim]`, int ids, outputs `[..., dim]`; returns vocab."""
    raw_shape = static_shape(params)
    shape = check_rank(method, "params", params, 2, "[vocab_size, dim]", strict=False)
    vocab_size, dim = dims(shape, 2)
    if vocab_size is None and raw_shape.rank:
        vocab_size = raw_shape.as_list()[0]
    if vocab_size is None:
        raise error(
            method,
            "`params` must have a static vocabulary size (dimension 0); got shape "
            "{}.".format(describe(shape)),
        )
    checked = []
    if inputs is not None:
        dtype = base_dtype(inputs)
        if dtype is not None and not dtype.is_integer:
            raise error(
                method,
                "`{}` must hold integer ids; got dtype {}.".format(
                    names[0], dtype.name
                ),
            )
        checked.append(
            (
                names[0],
                check_rank(
                    method,
                    names[0],
                    inputs,
                    (1, 2),
                    "[batch] or [batch, k]",
                    strict=False,
                ),
            )
        )
    if outputs is not None:
        out_shape = check_rank(
            method, names[1], outputs, (1, None), "[batch, dim]", strict=False
        )
        check_dim(
            method,
            names[1],
            out_shape,
            -1,
            dim,
            "[batch, {}]".format(dim),
            "for params of shape {}".format(describe(shape)),
        )
        checked.append((names[1], out_shape))
    if len(checked) == 2:
        check_same_batch(method, *checked)
    check_same_dtype(method, [("params", params), (names[1], outputs)])
    return int(vocab_size)


def check_batch_size(method: str, batch_size) -> None:
    """A positive number or a scalar Tensor."""
    if isinstance(batch_size, bool):
        raise error(
            method,
            "`batch_size` must be a positive number; got {!r}.".format(batch_size),
        )
    if isinstance(batch_size, (numbers.Real, np.number)):
        if not batch_size > 0:
            raise error(
                method, "`batch_size` must be positive; got {!r}.".format(batch_size)
            )
        return
    check_rank(method, "batch_size", batch_size, 0, "[]")


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


def check_num_uses(method: str, inputs, outputs, num_uses, required=True) -> None:
    """*_multi registrations: the use lists, `num_uses` and folded rows agree.

    With both `inputs` and `outputs` folded, `num_uses` must be given unless
    `required` is False.
    """
    lengths = [
        (name, len(value))
        for name, value in (("inputs", inputs), ("outputs", outputs))
        if isinstance(value, (tuple, list))
    ]
    if num_uses is not None:
        lengths.append(("num_uses", num_uses))
    if len({length for _, length in lengths}) > 1:
        raise error(
            method,
            "the number of uses disagrees: {}.".format(
                ", ".join("{} {}".format(name, length) for name, length in lengths)
            ),
        )
    if not lengths:
        if not required:
            return
        raise error(
            method,
            "`num_uses` is required when `inputs` and `outputs` are single folded "
            "tensors of shape [num_uses * batch, ...].",
        )
    if lengths[0][1] < 1:
        raise error(
            method, "at least one use is required; got {}.".format(lengths[0][1])
        )
    uses = lengths[0][1]
    for name, value in (("inputs", inputs), ("outputs", outputs)):
        if isinstance(value, (tuple, list)):
            continue
        shape = static_shape(value)
        rows = shape.as_list()[0] if shape.rank else None
        if rows is not None and rows % uses:
            raise error(
                method,
                "folded `{}` of shape {} must have num_uses * batch rows with "
                "num_uses = {}.".format(name, describe(shape), uses),
            )
