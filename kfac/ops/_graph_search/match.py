"""What a pattern found: one use of one layer, ready to be registered."""

import dataclasses
from typing import Optional
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops._graph_search.graph import Use


@dataclasses.dataclass(frozen=True, eq=False)
class LayerMatch:
    """One application of a layer found in the graph.

    Attributes:
      kind: the registration it needs ("fully_connected", "conv2d",
        "convolution", "depthwise_conv2d", "embedding", "scale_and_shift").
      params: `(weights, bias or None)`; for "scale_and_shift"
        `(scale or None, shift or None)`.
      inputs: the layer's inputs (for an embedding, the ids).
      outputs: its pre-activations (what the gradients are taken of).
      options: the registration's other keyword arguments, as sorted
        `(name, value)` pairs (strides, padding, ...).
      pattern: what was matched, for messages ("MatMul + BiasAdd").
      claims: the variable uses this application accounts for.
    """

    kind: str
    params: Tuple[Optional[tf.Variable], Optional[tf.Variable]]
    inputs: tf.Tensor
    outputs: tf.Tensor
    options: tuple
    pattern: str
    claims: Tuple[Use, ...]

    @property
    def variables(self) -> tuple:
        return tuple(var for var in self.params if var is not None)

    @property
    def registration_params(self):
        """The registration's `params`: `weights`, `(weights, bias)`, or for a
        scale and shift `scale`, `(scale, shift)` or `(None, shift)`."""
        if self.params[1] is None:
            return self.params[0]
        return self.params

    @property
    def signature(self) -> tuple:
        """What every use of one block must share: kind, parameters, options."""
        return (self.kind, self.variables, self.options)
