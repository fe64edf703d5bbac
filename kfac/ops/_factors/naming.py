"""Readable, stable strings for factor variable scopes and variable names.

A factor's variable scope is built from the arguments that define it (its
input tensors, shapes, flags), so that two factors built from the same
arguments get the same name, and matrix-power variables are named after the
damping function's id. These helpers turn such arguments into strings.

Port fixes (do not change any string the original could produce):
* numpy scalars and `tf.Dimension`s are turned into Python numbers first,
  because with numpy >= 2 `repr(np.int64(5))` is `'np.int64(5)'`, which is not
  a legal TensorFlow name;
* nested tuples of strings/numbers inside damping ids are supported (the
  original raised AttributeError on them);
* `legal_op_name` replaces characters TensorFlow rejects in names.
"""

import numbers
import re
from typing import Any

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.ops._utils import partitioned_tensor


def to_python_scalar(value: Any) -> Any:
    """numpy scalars / `tf.Dimension`s → Python numbers; anything else unchanged."""
    if isinstance(value, tf.Dimension):
        return value.value
    if isinstance(value, np.generic):
        return value.item()
    return value


# `tf.compat.v1.Variable` is not a base class of resource variables; the v2
# class is the base of both ref and resource variables.
TENSOR_LIKE_TYPES = (tf.Tensor, tf.compat.v2.Variable)


def _is_tensor_like(value: Any) -> bool:
    return isinstance(value, TENSOR_LIKE_TYPES)


def scope_string_from_name(tensor: Any) -> str:
    """Name string of a tensor, or of a (nested) list/tuple of them.

    A list/tuple gives its elements' strings joined by `"__"`; a tensor or
    variable gives its name without the `":N"` suffix and with `/` replaced by
    `_` (`"gradients/MatMul_grad/MatMul_1:0"` → `"gradients_MatMul_grad_MatMul_1"`).
    A `PartitionedTensor` gives the string of its list of tensors. Strings are
    kept and Python/numpy scalars use `repr` (these only occur nested inside
    damping ids).

    Raises:
      ValueError: for any other object.
    """
    tensor = to_python_scalar(tensor)
    if isinstance(tensor, (tuple, list)):
        return "__".join(scope_string_from_name(item) for item in tensor)
    if isinstance(tensor, partitioned_tensor.PartitionedTensor):
        return scope_string_from_name(tensor.tensors)
    if isinstance(tensor, str):
        return tensor
    if tensor is None or isinstance(tensor, numbers.Number):
        return repr(tensor)
    name = getattr(tensor, "name", None)
    if not isinstance(name, str):
        raise ValueError(
            "scope_string_from_name: expected a Tensor, Variable or a list/tuple "
            "of them, got %r of type %s." % (tensor, type(tensor).__name__)
        )
    return name.split(":")[0].replace("/", "_")


def scope_string_from_params(params: Any) -> str:
    """Variable-scope string for a parameter or list of parameters.

    Each parameter becomes one part, parts joined by `"_"`:
    `None` → `"None"`; a list/tuple of ints → the ints joined by `"-"`; another
    list/tuple → `scope_string_from_name` of it; `str`/`int`/`bool` → `str(x)`;
    a Tensor/Variable → `scope_string_from_name`; a `PartitionedTensor` →
    `scope_string_from_name` of its tensors. Example: `[[1, 2, 3], 'foo', True,
    4, (x, y)]` with tensors `Const`, `Const_1` → `'1-2-3_foo_True_4_Const__Const_1'`.

    Raises:
      ValueError: a parameter of another type (e.g. a float).
    """
    if not isinstance(params, (tuple, list)):
        params = (params,)
    parts = []
    for param in params:
        param = to_python_scalar(param)
        if param is None:
            parts.append("None")
        elif isinstance(param, (tuple, list)):
            items = [to_python_scalar(item) for item in param]
            # bool is an int subclass, as in the original.
            if all(isinstance(item, numbers.Integral) for item in items):
                parts.append("-".join(str(item) for item in items))
            else:
                parts.append(scope_string_from_name(param))
        elif isinstance(param, (str, numbers.Integral)):
            parts.append(str(param))
        elif _is_tensor_like(param):
            parts.append(scope_string_from_name(param))
        elif isinstance(param, partitioned_tensor.PartitionedTensor):
            parts.append(scope_string_from_name(param.tensors))
        else:
            raise ValueError(
                "scope_string_from_params: unsupported parameter type %s (%r); "
                "expected None, str, int, bool, a Tensor/Variable, a "
                "PartitionedTensor or a list/tuple of them."
                % (type(param).__name__, param)
            )
    return "_".join(parts)


def scalar_or_tensor_to_string(val: Any) -> str:
    """`repr` of a Python/numpy scalar, else `scope_string_from_name(val)`."""
    val = to_python_scalar(val)
    if np.isscalar(val):
        return repr(val)
    return scope_string_from_name(val)


def list_to_string(lst: Any) -> str:
    """Elements joined by `"_"`: strings kept, others `scalar_or_tensor_to_string`."""
    return "_".join(
        val if isinstance(val, str) else scalar_or_tensor_to_string(val) for val in lst
    )


def graph_func_to_id(func: Any) -> tuple:
    """The stable id of a damping function (`func.func_id`)."""
    return func.func_id


def graph_func_to_string(func: Any) -> str:
    """`list_to_string(func.func_id)`, used in variable names."""
    return list_to_string(func.func_id)


# TensorFlow op names: first char [A-Za-z0-9.], then [A-Za-z0-9_.\-/].
_ILLEGAL_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-/]")


def legal_op_name(name: str) -> str:
    """`name` with characters TensorFlow rejects in op names replaced by `_`.

    Only affects names the original could not create (e.g. `repr(1e+20)`).
    """
    return _ILLEGAL_NAME_CHARS.sub("_", name)
