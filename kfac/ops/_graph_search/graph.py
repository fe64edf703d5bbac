"""Where variables are read in the part of the graph that computes the losses."""

import dataclasses
from typing import Dict
from typing import List
from typing import Sequence

import tensorflow.compat.v1 as tf

from kfac.ops._utils.graph import SubGraph

# Ops that only pass a variable's value on: a use is what consumes their output.
_READ_OPS = ("ReadVariableOp", "Identity", "Snapshot")


@dataclasses.dataclass(frozen=True, eq=False)
class Use:
    """One op of the losses' sub-graph consuming a variable's value.

    Attributes:
      variable: the variable read.
      op: the consuming op (`MatMul`, `Conv2D`, `ResourceGather`, ...).
      index: the position of the variable's value among `op.inputs`.
    """

    variable: tf.Variable
    op: tf.Operation
    index: int

    def describe(self) -> str:
        return "{} (input {} of {} op {!r})".format(
            self.variable.op.name, self.index, self.op.type, self.op.name
        )


class LossGraph(object):
    """The ancestors of the losses' inputs, and the variable reads among them.

    `value_of[tensor]` is the variable whose value `tensor` is (a read op's
    output, or the variable's own ref tensor) for every scanned variable.
    """

    def __init__(self, loss_inputs: Sequence[tf.Tensor], variables):
        self.subgraph = SubGraph(loss_inputs)
        graph = loss_inputs[0].graph
        self._order = {op: i for i, op in enumerate(graph.get_operations())}
        self.value_of: Dict[tf.Tensor, tf.Variable] = {}
        self.uses: Dict[tf.Variable, List[Use]] = {}
        for var in variables:
            self.uses[var] = self._find_uses(var)

    def _find_uses(self, var) -> List[Use]:
        """The uses of `var` in the sub-graph, in op creation order.

        Starts at the variable's handle (resource) or ref tensor and follows
        read ops; every other consumer in the sub-graph is a use (a
        `ResourceGather` consumes the handle itself).
        """
        uses = []
        stack = [var.op.outputs[0]]
        seen = set()
        while stack:
            tensor = stack.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            self.value_of[tensor] = var
            for op in tensor.consumers():
                if not self.subgraph.is_member(op):
                    continue
                if op.type in _READ_OPS:
                    stack.extend(op.outputs)
                    continue
                for index, op_input in enumerate(op.inputs):
                    if op_input is tensor:
                        uses.append(Use(var, op, index))
        uses.sort(key=lambda use: (self.order(use.op), use.index))
        return uses

    def order(self, op) -> int:
        """Position of `op` in the graph's creation order."""
        return self._order[op]

    def variable_of(self, tensor):
        """The scanned variable whose value `tensor` is, or None."""
        return self.value_of.get(tensor)

    def consumers(self, tensor) -> List[tf.Operation]:
        """The consumers of `tensor` inside the sub-graph."""
        return [op for op in tensor.consumers() if self.subgraph.is_member(op)]

    def sole_consumer(self, tensor):
        """The only consumer of `tensor` in the sub-graph, or None."""
        consumers = self.consumers(tensor)
        return consumers[0] if len(consumers) == 1 else None
