"""Graph-level helpers: sub-graph membership, forward-mode products,
round-robin execution of thunks, random signs, and the (single-replica) TPU
helpers.
"""

from typing import Callable
from typing import List
from typing import Sequence

import tensorflow.compat.v1 as tf


def _is_graph_tensor(node) -> bool:
    return isinstance(node, tf.Tensor) and hasattr(node, "op")


class SubGraph(object):
    """All tensors and operations that are ancestors of some outputs.

    Built by an iterative depth-first walk (tensor → its op → the op's input
    tensors), so deep graphs do not hit Python's recursion limit. The outputs
    themselves are members. Control inputs are not followed (as in the
    original).
    """

    def __init__(self, outputs: Sequence[tf.Tensor]):
        self._members = set()
        stack = list(outputs)
        while stack:
            node = stack.pop()
            if node in self._members:
                continue
            self._members.add(node)
            if isinstance(node, tf.Operation):
                stack.extend(node.inputs)
            elif _is_graph_tensor(node):
                stack.append(node.op)
            # Anything else (e.g. a Variable) is a member with no ancestors.

    def is_member(self, node) -> bool:
        """True when the tensor or operation `node` is in the sub-graph."""
        return node in self._members

    def variable_uses(self, var: tf.Variable) -> int:
        """Number of ops in the sub-graph that consume `var`.

        For a resource variable, the consumers of `var.handle` (each read op
        counts once; in graph mode every `tf.matmul(x, var)` makes its own
        read); for a ref variable, the consumers of `var.value()` (its read
        snapshot, which every implicit conversion uses).

        Raises:
          ValueError: `var` is not a `tf.Variable`.
        """
        # compat.v2's Variable is the base of ref and resource variables alike.
        if not isinstance(var, tf.compat.v2.Variable):
            raise ValueError(
                "SubGraph.variable_uses: var must be a tf.Variable, got %r." % (var,)
            )
        if hasattr(var, "handle"):
            read_source = var.handle
        else:
            read_source = var.value()
        return sum(1 for op in read_source.consumers() if op in self._members)

    def filter_list(self, node_list):
        """The members of `node_list` that belong to the sub-graph, in order."""
        return [node for node in node_list if self.is_member(node)]


def generate_random_signs(shape, dtype=tf.float32):
    """Tensor of independent ±1 entries (uniform integer k ∈ {0, 1} → 2k − 1)."""
    ints = tf.random_uniform(shape, maxval=2, dtype=tf.int32)
    return 2 * tf.cast(ints, dtype) - 1


def fwd_gradients(ys, xs, grad_xs=None, stop_gradients=None) -> List[tf.Tensor]:
    """Forward-mode Jacobian-vector products `J · grad_xs`, `J = ∂ys/∂xs`.

    Double-backprop trick: with dummy cotangents `u` shaped like each `y`,
    `g(u) = (∂y/∂x)ᵀ u` is linear in `u`, and differentiating `g` w.r.t. `u`
    with cotangent `grad_xs` gives `(∂y/∂x) grad_xs`. `IndexedSlices` from the
    first backprop are densified and missing gradients replaced by zeros.

    Port improvement: a `y` that depends on none of `xs` gets a zero product
    (the original returned None), and the dummy cotangents are zeros (their
    value never matters since `g` is linear).

    Args:
      ys: list of Tensors (a single Tensor is accepted).
      xs: list of Tensors (a single Tensor is accepted).
      grad_xs: list of tangent vectors shaped like `xs` (None: all ones, as
        `tf.gradients` does for `grad_ys=None`).
      stop_gradients: forwarded to the first `tf.gradients` call.

    Returns:
      A list aligned with `ys` of `J · grad_xs`, each shaped like its `y`.
    """
    ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
    xs = list(xs) if isinstance(xs, (list, tuple)) else [xs]
    if grad_xs is not None and not isinstance(grad_xs, (list, tuple)):
        grad_xs = [grad_xs]
    if grad_xs is not None and len(grad_xs) != len(xs):
        raise ValueError(
            "fwd_gradients: grad_xs must have one entry per x (%d), got %d."
            % (len(xs), len(grad_xs))
        )
    dummy_cotangents = [tf.zeros_like(y) for y in ys]
    transposed = tf.gradients(
        ys, xs, grad_ys=dummy_cotangents, stop_gradients=stop_gradients
    )
    transposed = [
        tf.zeros_like(x)
        if grad is None
        else tf.convert_to_tensor(grad)
        if isinstance(grad, tf.IndexedSlices)
        else grad
        for x, grad in zip(xs, transposed)
    ]
    products = tf.gradients(transposed, dummy_cotangents, grad_ys=grad_xs)
    return [
        tf.zeros_like(y) if product is None else product
        for y, product in zip(ys, products)
    ]


def on_tpu() -> bool:
    """Whether a TPU computation is being built: always False in this port."""
    return False


def cross_replica_mean(tensor, name=None):
    """Mean of `tensor` over replicas: the identity with a single replica.

    The original averaged over TPU shards; this port has no TPU support, so it
    returns `tensor` itself (inside a `"cross_replica_mean"` name scope).
    """
    with tf.name_scope(name, "cross_replica_mean", [tensor]):
        return tensor


def batch_execute(global_step, thunks: Sequence[Callable], batch_size: int, name=None):
    """Runs `batch_size` of the `thunks` per step, round-robin.

    At step `s` thunk `j` runs iff
    `(batch_size − 1 + s·batch_size − j) mod len(thunks) < batch_size`,
    e.g. with 3 thunks and batch 2, steps 0, 1, 2, 3 run {0, 1}, {0, 2},
    {1, 2}, {0, 1}. Each thunk is called once here, inside the true branch of
    its `tf.cond`, and must return an op or tensor, which is forced to run.

    Args:
      global_step: integer scalar Tensor/Variable (the step `s`).
      thunks: list of zero-argument callables that build ops.
      batch_size: number of thunks to run per step (Python int ≥ 1).
      name: variable-scope name (default `"batch_execute"`).

    Returns:
      A list with one result per thunk (the `tf.cond` output; running it runs
      the thunk on its steps and nothing otherwise).
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or (batch_size < 1)
    ):
        raise ValueError(
            "batch_execute: batch_size must be a positive Python int, got %r."
            % (batch_size,)
        )
    thunks = list(thunks)

    def run_thunk(thunk):
        def branch():
            with tf.control_dependencies([thunk()]):
                return tf.no_op()

        return branch

    with tf.variable_scope(name, default_name="batch_execute"):
        num_thunks = len(thunks)
        results = []
        for j, thunk in enumerate(thunks):
            slot = tf.math.floormod(
                batch_size - 1 + global_step * batch_size - j, num_thunks
            )
            results.append(
                tf.cond(tf.less(slot, batch_size), run_thunk(thunk), tf.no_op)
            )
        return results
