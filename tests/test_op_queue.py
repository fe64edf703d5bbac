"""Tests for kfac.ops.op_queue (API.md §10)."""

import pytest
import tensorflow.compat.v1 as tf

from kfac.ops import op_queue

NUM_OPS = 5


def _drain(seed, num_calls):
    """Names returned by `num_calls` calls of a fresh queue; ops added meanwhile."""
    with tf.Graph().as_default() as graph:
        ops = [tf.no_op(name="op_{}".format(i)) for i in range(NUM_OPS)]
        queue = op_queue.OpQueue(ops, seed=seed)
        with tf.Session() as sess:
            num_graph_ops = len(graph.get_operations())
            names = [queue.next_op(sess).name for _ in range(num_calls)]
            added = len(graph.get_operations()) - num_graph_ops
        assert set(queue.ops) == set(ops)
        assert all(isinstance(name, str) for name in names)
        return names, added


def test_every_pass_is_a_permutation_and_passes_are_shuffled(tf_behavior):
    names, _ = _drain(seed=3, num_calls=4 * NUM_OPS)
    expected = sorted("op_{}".format(i) for i in range(NUM_OPS))
    passes = [names[i : i + NUM_OPS] for i in range(0, len(names), NUM_OPS)]
    for one_pass in passes:
        assert sorted(one_pass) == expected
    # 4 passes all in sorted order has probability 120**-4: the queue shuffles.
    assert any(one_pass != expected for one_pass in passes)


def test_next_op_creates_no_graph_ops(tf_behavior):
    _, added = _drain(seed=None, num_calls=7)
    assert added == 0


def test_same_seed_gives_workers_the_same_order():
    first, _ = _drain(seed=11, num_calls=2 * NUM_OPS)
    second, _ = _drain(seed=11, num_calls=2 * NUM_OPS)
    assert first == second


def test_returns_the_op_objects():
    with tf.Graph().as_default():
        ops = [tf.no_op(name="a"), tf.no_op(name="b")]
        queue = op_queue.OpQueue(ops, seed=0)
        with tf.Session() as sess:
            assert queue.next_op(sess) in ops


def test_empty_op_list_is_rejected():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="non-empty"):
            op_queue.OpQueue([])
