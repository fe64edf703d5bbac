"""`PartitionedTensor`: a lazy concatenation of tensors along axis 0."""

from typing import Sequence

import tensorflow.compat.v1 as tf


def _current_context_key(device: str):
    """Where a tensor created now can be reused: graph, control-flow context, device.

    A concat built inside a `tf.cond` branch (v1 control-flow context, or a v2
    branch FuncGraph) cannot be used outside it, so the cache is keyed on those
    too (a fix of the original, which cached per device only).
    """
    graph = tf.get_default_graph()
    get_context = getattr(graph, "_get_control_flow_context", None)
    context = get_context() if get_context is not None else None
    return (id(graph), id(context), device)


class PartitionedTensor(object):
    """A list of tensors that acts as their concatenation along axis 0.

    Used to merge towers/uses without copying until the concatenation is
    needed. Two `PartitionedTensor`s are equal (and hash equally) when they hold
    the same tensor objects in the same order, so blocks built on the same
    towers share one factor. Registered as a tensor-conversion type, so it can
    be passed to any TensorFlow op.

    Attributes:
      tensors: the list of tensors.
    """

    def __init__(self, tensors: Sequence[tf.Tensor]):
        tensors = list(tensors) if tensors is not None else []
        if not tensors:
            raise ValueError("PartitionedTensor: tensors must be a non-empty list.")
        dtypes = [tensor.dtype for tensor in tensors]
        if any(dtype != dtypes[0] for dtype in dtypes):
            raise ValueError(
                "PartitionedTensor: all tensors must have the same dtype, got %s."
                % [dtype.name for dtype in dtypes]
            )
        if any(not tensor.shape.ndims for tensor in tensors):
            raise ValueError(
                "PartitionedTensor: all tensors need a known rank >= 1, got "
                "shapes %s." % [str(tensor.shape) for tensor in tensors]
            )
        feature_shape = tensors[0].shape[1:]
        for tensor in tensors[1:]:
            if not tensor.shape[1:].is_compatible_with(feature_shape):
                raise ValueError(
                    "PartitionedTensor: all tensors must have the same shape "
                    "beyond dimension 0, got %s."
                    % [str(tensor.shape) for tensor in tensors]
                )
            feature_shape = feature_shape.merge_with(tensor.shape[1:])
        self._feature_shape = feature_shape
        self.tensors = tensors
        self._concats = {}

    @property
    def shape(self) -> tf.TensorShape:
        """Sum of the leading dims (None if any is unknown) + the feature shape."""
        leading = [tensor.shape.as_list()[0] for tensor in self.tensors]
        batch_size = None if None in leading else sum(leading)
        return tf.TensorShape([batch_size]).concatenate(self._feature_shape)

    def get_shape(self) -> tf.TensorShape:
        return self.shape

    @property
    def dtype(self) -> tf.DType:
        return self.tensors[0].dtype

    @property
    def device(self):
        """The common device string of the tensors, or None if they differ."""
        devices = {tensor.device for tensor in self.tensors}
        if len(devices) == 1:
            return devices.pop()
        return None

    def __str__(self):
        return "PartitionedTensor([%s, ...], dtype=%s, shape=%s)" % (
            self.tensors[0].name,
            self.dtype.name,
            tuple(self.shape.as_list()),
        )

    def __repr__(self):
        return str(self)

    def __hash__(self):
        # Graph tensors hash by identity; hashing ids keeps that in every mode.
        return hash(tuple(id(tensor) for tensor in self.tensors))

    def __eq__(self, other):
        if not isinstance(other, PartitionedTensor):
            return False
        return len(self.tensors) == len(other.tensors) and all(
            mine is theirs for mine, theirs in zip(self.tensors, other.tensors)
        )

    def __ne__(self, other):
        return not self == other

    def __getitem__(self, key):
        return self.as_tensor()[key]

    def as_tensor(self, dtype=None, name=None, as_ref=False):
        """The concatenation along axis 0, one concat op per device/context.

        Raises:
          ValueError: `as_ref` is True, or `dtype` differs from `self.dtype`.
        """
        if as_ref:
            raise ValueError("PartitionedTensor: cannot be converted as a reference.")
        if dtype is not None and tf.as_dtype(dtype) != self.dtype:
            raise ValueError(
                "PartitionedTensor: requested dtype %s but the tensors are %s."
                % (tf.as_dtype(dtype).name, self.dtype.name)
            )
        with tf.name_scope(name, "PartitionedTensor.as_tensor", self.tensors):
            # The device a new op gets is only known once it exists, so build
            # the concat and return the cached one when it is a duplicate.
            result = tf.concat(self.tensors, axis=0)
            key = _current_context_key(result.device)
            return self._concats.setdefault(key, result)


def _convert_partitioned_tensor(value, dtype=None, name=None, as_ref=False):
    return value.as_tensor(dtype=dtype, name=name, as_ref=as_ref)


# compat.v1 exposes the conversion registry in TF 2.15 and 2.21 alike.
tf.register_tensor_conversion_function(PartitionedTensor, _convert_partitioned_tensor)
