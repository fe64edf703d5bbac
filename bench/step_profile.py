"""Where a training step's time goes: the op time of its matrix products and
of everything else, and the arithmetic of those products, from TensorFlow's
step statistics (issue #14, part 3: is a step bound by its arithmetic?).

`profile_step(sess, fetches, feed)` runs the fetches with full tracing a few
times and returns, per step: the wall-clock seconds, the summed seconds of
every op run (above the wall-clock time when ops run in parallel), those of
the matrix products, and the multiply-adds of the products (from the graph's
static shapes). A product fused with its bias add or activation runs under
the name of the op it fed (e.g. `_MklNativeFusedMatMul` named `Tanh`);
`product_of` finds the MatMul op behind it.
"""

import statistics
import time
from typing import Dict
from typing import Optional

import numpy as np
import tensorflow.compat.v1 as tf

MATMUL_TYPES = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
# How far up a fused node's first inputs its MatMul may be (bias add, then
# activation).
FUSION_DEPTH = 3
TRACED_RUNS = 5


def multiply_adds(op: tf.Operation) -> int:
    """`m·k·n` (times the batch of a batched product) of a matrix product
    `op` from its inputs' static shapes; 0 when a shape is not fully known."""
    left, right = (tensor.shape for tensor in op.inputs[:2])
    if not (left.is_fully_defined() and right.is_fully_defined()):
        return 0
    left, right = left.as_list(), right.as_list()
    if op.type == "MatMul":
        flip_left, flip_right = op.get_attr("transpose_a"), op.get_attr("transpose_b")
    else:
        flip_left, flip_right = op.get_attr("adj_x"), op.get_attr("adj_y")
    rows, inner = (left[-1], left[-2]) if flip_left else (left[-2], left[-1])
    columns = right[-2] if flip_right else right[-1]
    batch = np.broadcast_shapes(tuple(left[:-2]), tuple(right[:-2]))
    return int(np.prod(batch, dtype=np.int64)) * rows * inner * columns


def product_of(graph: tf.Graph, name: str) -> Optional[tf.Operation]:
    """The matrix product a run-time node called `name` computes: the graph's
    op of that name if it is one, else the first MatMul up its first inputs
    (at most `FUSION_DEPTH` ops); None if there is none."""
    try:
        op = graph.get_operation_by_name(name)
    except KeyError:
        return None
    for _ in range(FUSION_DEPTH + 1):
        if op.type in MATMUL_TYPES:
            return op
        if not op.inputs:
            return None
        op = op.inputs[0].op
    return None


def _op_type(node_stats) -> str:
    """The kernel a traced node ran (`name = Type(inputs)` in its label)."""
    label = node_stats.timeline_label
    if "=" not in label:
        return node_stats.node_name
    return label.split("=", 1)[1].split("(", 1)[0].strip()


def profile_step(sess: tf.Session, fetches, feed: Dict,
                 runs: int = TRACED_RUNS) -> Dict:
    """Per step of `sess.run(fetches, feed)`, over `runs` traced runs (after
    one untraced run): `wall_seconds` (median), `op_seconds` and
    `matmul_op_seconds` (means of the summed op times), `multiply_adds` of
    the products (of the last run) and `uncounted_products` (product nodes
    whose MatMul op was not found: their arithmetic is missing)."""
    graph = sess.graph
    options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
    sess.run(fetches, feed)
    walls, op_seconds, matmul_seconds = [], [], []
    for _ in range(runs):
        metadata = tf.RunMetadata()
        start = time.perf_counter()
        sess.run(fetches, feed, options=options, run_metadata=metadata)
        walls.append(time.perf_counter() - start)
        total = products = 0.0
        arithmetic = uncounted = 0
        for device in metadata.step_stats.dev_stats:
            for node in device.node_stats:
                seconds = node.all_end_rel_micros * 1e-6
                total += seconds
                if "MatMul" not in _op_type(node):
                    continue
                products += seconds
                op = product_of(graph, node.node_name)
                if op is None:
                    uncounted += 1
                else:
                    arithmetic += multiply_adds(op)
        op_seconds.append(total)
        matmul_seconds.append(products)
    return {"wall_seconds": statistics.median(walls),
            "op_seconds": float(np.mean(op_seconds)),
            "matmul_op_seconds": float(np.mean(matmul_seconds)),
            "multiply_adds": arithmetic, "uncounted_products": uncounted}


def rates(profile: Dict) -> Dict:
    """`matmul_share` (of the op time) and `gflops` (the products' floating
    point operations, 2 per multiply-add, per wall-clock second)."""
    return {"matmul_share": profile["matmul_op_seconds"] / profile["op_seconds"],
            "gflops": 2e-9 * profile["multiply_adds"] / profile["wall_seconds"]}
