"""Forward-mode Jacobian-vector products `J v` through an already built graph.

`tf.gradients` only runs in reverse mode. The usual way to get `J v` from it
(`utils.fwd_gradients`) differentiates `⟨Jᵀu, v⟩` with respect to dummy
cotangents `u` ("double backprop"). The second pass does not need the value
of `u`, but it needs the run-time *shape* of some tensors of the first one
(the gradient of a reduction such as the bias gradient `Σ_rows δ` broadcasts
back to the shape of `δ`), so at run time the whole first backward pass is
executed on zeros: one wasted backward pass, a third of a training step.

`jacobian_vector_products` instead walks the ops between the variables and
the outputs once, in topological order, and pushes the tangents forward: by
a closed-form rule for the common ops (identities, `MatMul`, `Add`, `Mul`,
`tanh`, sigmoid, ReLU), and for any other op by the double-backprop trick
applied to that op alone (its dummy cotangent is a zeros tensor shaped like
the op's output, cheap to make). Several directions share one walk (and
every op's local backward graph). Graphs with control flow between the
variables and the outputs (TF1 `Switch`/`Merge`/frames or functional
`If`/`While`/calls) use the global double-backprop trick instead.
"""

import contextlib
from typing import Any
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

import tensorflow.compat.v1 as tf

# Ops whose local Jacobian needs the surrounding control-flow context (v1) or a
# function body (v2): the whole products then use the global trick.
_CONTROL_FLOW_OPS = frozenset(
    [
        "Switch", "RefSwitch", "Merge", "RefMerge", "Enter", "RefEnter", "Exit",
        "RefExit", "NextIteration", "RefNextIteration", "LoopCond", "If",
        "StatelessIf", "While", "StatelessWhile", "Case", "StatelessCase",
        "PartitionedCall", "StatefulPartitionedCall",
    ]
)
_IDENTITY_OPS = frozenset(["Identity", "ReadVariableOp", "Snapshot"])

Tangents = List[Optional[tf.Tensor]]  # one entry per direction


def _dense(value: Any) -> tf.Tensor:
    if isinstance(value, tf.IndexedSlices):
        return tf.convert_to_tensor(value)
    return value


def _is_differentiable(tensor: tf.Tensor) -> bool:
    dtype = tensor.dtype.base_dtype
    return dtype.is_floating or dtype.is_complex


def _seed(variable: Any) -> Optional[tf.Tensor]:
    """The tensor `tf.gradients` differentiates with respect to for `variable`."""
    if isinstance(variable, tf.Tensor):
        return variable
    handle = getattr(variable, "handle", None)
    if isinstance(handle, tf.Tensor) and handle.dtype == tf.resource:
        return handle
    op = getattr(variable, "op", None)
    if op is not None and op.type in ("VariableV2", "Variable"):
        return op.outputs[0]  # the ref tensor of a TF1 variable
    return None


def _ops_between(seeds: Sequence[tf.Tensor], outputs: Sequence[tf.Tensor]):
    """Ops on a data path from a seed to an output, topologically sorted.

    Returns None if the path crosses control flow or has a cycle.
    """
    ancestors = set()
    stack = [output.op for output in outputs]
    while stack:
        op = stack.pop()
        if op not in ancestors:
            ancestors.add(op)
            stack.extend(tensor.op for tensor in op.inputs)
    between = set()
    stack = [consumer for seed in seeds for consumer in seed.consumers()]
    while stack:
        op = stack.pop()
        if op in ancestors and op not in between:
            between.add(op)
            stack.extend(c for output in op.outputs for c in output.consumers())
    if any(op.type in _CONTROL_FLOW_OPS for op in between):
        return None
    # Kahn's algorithm over the data edges inside `between`.
    pending = {op: sum(1 for t in op.inputs if t.op in between) for op in between}
    ready = sorted((op for op, count in pending.items() if count == 0),
                   key=lambda op: op.name)
    order = []
    while ready:
        op = ready.pop()
        order.append(op)
        for output in op.outputs:
            # consumers() may list an op once per input slot it feeds.
            for consumer in dict.fromkeys(output.consumers()):
                if consumer in pending:
                    pending[consumer] -= sum(1 for t in consumer.inputs if t is output)
                    if pending[consumer] == 0:
                        ready.append(consumer)
    return order if len(order) == len(between) else None


def _add_tangents(op, tangents_per_input: List[Optional[Tangents]], num_directions):
    """`AddV2`/`Add`/`Sub`: the sum (difference) of the input tangents,
    broadcast to the output shape."""
    output = op.outputs[0]
    results = []
    for direction in range(num_directions):
        total = None
        for index, tangents in enumerate(tangents_per_input):
            if tangents is None:
                continue
            term = tangents[direction]
            if op.type == "Sub" and index == 1:
                term = -term
            total = term if total is None else total + term
        if not (total.shape.is_fully_defined() and total.shape == output.shape):
            total = tf.broadcast_to(total, tf.shape(output))
        results.append(total)
    return [results]


def _mul_tangents(op, tangents_per_input, num_directions):
    """`Mul`: `ẋ·y + x·ẏ` (broadcasting gives the output shape)."""
    x, y = op.inputs
    results = []
    for direction in range(num_directions):
        terms = []
        if tangents_per_input[0] is not None:
            terms.append(tangents_per_input[0][direction] * y)
        if tangents_per_input[1] is not None:
            terms.append(x * tangents_per_input[1][direction])
        results.append(terms[0] if len(terms) == 1 else terms[0] + terms[1])
    return [results]


def _matmul_tangents(op, tangents_per_input, num_directions):
    """`MatMul`: `ȧ·b + a·ḃ` with the op's transpositions."""
    a, b = op.inputs
    transpose_a = op.get_attr("transpose_a")
    transpose_b = op.get_attr("transpose_b")
    results = []
    for direction in range(num_directions):
        terms = []
        if tangents_per_input[0] is not None:
            terms.append(tf.matmul(tangents_per_input[0][direction], b,
                                   transpose_a=transpose_a, transpose_b=transpose_b))
        if tangents_per_input[1] is not None:
            terms.append(tf.matmul(a, tangents_per_input[1][direction],
                                   transpose_a=transpose_a, transpose_b=transpose_b))
        results.append(terms[0] if len(terms) == 1 else terms[0] + terms[1])
    return [results]


def _elementwise_tangents(derivative):
    """Rule for `y = f(x)` with `ẏ = derivative(y, ẋ)` (a TF "...Grad" kernel)."""
    def rule(op, tangents_per_input, num_directions):
        output = op.outputs[0]
        return [[derivative(output, tangents_per_input[0][direction])
                 for direction in range(num_directions)]]
    return rule


_RULES = {
    "MatMul": _matmul_tangents,
    "AddV2": _add_tangents,
    "Add": _add_tangents,
    "Sub": _add_tangents,
    "Mul": _mul_tangents,
    # y' = 1 − y², σ(1 − σ), 1[y > 0]: the kernels the gradients use.
    "Tanh": _elementwise_tangents(lambda y, dx: tf.raw_ops.TanhGrad(y=y, dy=dx)),
    "Sigmoid": _elementwise_tangents(
        lambda y, dx: tf.raw_ops.SigmoidGrad(y=y, dy=dx)),
    "Relu": _elementwise_tangents(
        lambda y, dx: tf.raw_ops.ReluGrad(gradients=dx, features=y)),
}


def _local_tangents(op, tangents_per_input, num_directions, colocate):
    """Any op: the double-backprop trick on this op alone.

    With `u` zeros shaped like the op's outputs, `g = Σ (∂y/∂x_i)ᵀ u` over the
    inputs with tangents (the other inputs and any path between inputs held
    constant), then `ẏ = ∂⟨g, ẋ⟩/∂u` for each direction.
    """
    inputs, input_tangents = [], []
    for tensor, tangents in zip(op.inputs, tangents_per_input):
        if tangents is not None and all(tensor is not seen for seen in inputs):
            inputs.append(tensor)
            input_tangents.append(tangents)
    outputs = [output for output in op.outputs if _is_differentiable(output)]
    cotangents = [tf.zeros_like(output) for output in outputs]
    grads = tf.gradients(outputs, inputs, grad_ys=cotangents, stop_gradients=inputs,
                         colocate_gradients_with_ops=colocate)
    pairs = [(_dense(grad), tangents)
             for grad, tangents in zip(grads, input_tangents) if grad is not None]
    by_output = {output: [None] * num_directions for output in outputs}
    if not pairs:
        return [None] * len(op.outputs)
    for direction in range(num_directions):
        products = tf.gradients([grad for grad, _ in pairs], cotangents,
                                grad_ys=[tangents[direction] for _, tangents in pairs],
                                colocate_gradients_with_ops=colocate)
        for output, product in zip(outputs, products):
            by_output[output][direction] = (tf.zeros_like(output) if product is None
                                            else product)
    return [by_output.get(output) for output in op.outputs]


def _propagate(order, tangents: Dict[Any, Tangents], num_directions: int,
               colocate: bool) -> None:
    for op in order:
        tangents_per_input = [tangents.get(tensor) for tensor in op.inputs]
        if all(tangent is None for tangent in tangents_per_input):
            continue
        if not any(_is_differentiable(output) for output in op.outputs):
            continue
        placement = tf.colocate_with(op) if colocate else contextlib.nullcontext()
        with placement:
            if op.type in _IDENTITY_OPS:
                results = [tangents_per_input[0]]
            elif op.type in _RULES and len(op.outputs) == 1:
                results = _RULES[op.type](op, tangents_per_input, num_directions)
            else:
                results = _local_tangents(op, tangents_per_input, num_directions,
                                          colocate)
        for output, result in zip(op.outputs, results):
            if result is not None and _is_differentiable(output):
                tangents[output] = result


def _global_products(outputs, variables, tangents_list, colocate):
    """The double-backprop trick over the whole graph (the fallback)."""
    cotangents = [tf.zeros_like(output) for output in outputs]
    transposed = tf.gradients(outputs, list(variables), grad_ys=cotangents,
                              colocate_gradients_with_ops=colocate)
    transposed = [tf.zeros_like(var) if grad is None else _dense(grad)
                  for grad, var in zip(transposed, variables)]
    products = []
    for vectors in tangents_list:
        jvps = tf.gradients(transposed, cotangents,
                            grad_ys=[_dense(vector) for vector in vectors])
        products.append([tf.zeros_like(cotangent) if jvp is None else jvp
                         for jvp, cotangent in zip(jvps, cotangents)])
    return products


def jacobian_vector_products(
        outputs: Sequence[tf.Tensor], variables: Sequence[Any],
        tangents_list: Sequence[Sequence[Any]],
        colocate_gradients_with_ops: bool = True) -> List[List[tf.Tensor]]:
    """`J v` for each list `v` in `tangents_list`, `J = ∂outputs/∂variables`.

    The products equal `utils.fwd_gradients(outputs, variables, v)` (the
    partial derivatives `tf.gradients` would take, e.g. nothing flows through
    `tf.stop_gradient`), computed by one forward-mode walk (module doc).

    Args:
      outputs: the tensors differentiated (e.g. every loss's inputs).
      variables: variables (resource or TF1) or tensors, aligned with each `v`.
      tangents_list: lists of vectors shaped like `variables` (`IndexedSlices`
        are densified).
      colocate_gradients_with_ops: build each op's products next to the op.

    Returns:
      One list per entry of `tangents_list`, aligned with `outputs` (zeros
      for an output that does not depend on the variables).
    """
    outputs = list(outputs)
    variables = list(variables)
    seeds = [_seed(variable) for variable in variables]
    order = None
    if all(seed is not None for seed in seeds):
        order = _ops_between(seeds, outputs)
    if order is None:
        return _global_products(outputs, variables, tangents_list,
                                colocate_gradients_with_ops)
    with tf.name_scope("jacobian_vector_products"):
        return _forward_products(seeds, order, outputs, tangents_list,
                                 colocate_gradients_with_ops)


def _forward_products(seeds, order, outputs, tangents_list, colocate):
    num_directions = len(tangents_list)
    tangents = {}
    for index, seed in enumerate(seeds):
        vectors = [_dense(vectors[index]) for vectors in tangents_list]
        if seed in tangents:  # the same variable twice: tangents add up
            vectors = [old + new for old, new in zip(tangents[seed], vectors)]
        tangents[seed] = vectors
    _propagate(order, tangents, num_directions, colocate)
    return [[tangents[output][direction] if output in tangents
             else tf.zeros_like(output) for output in outputs]
            for direction in range(num_directions)]
