"""Hands out ops in an endlessly repeated, shuffled order (API.md §10).

Used to split expensive updates (typically the inverse updates) between
workers: each worker calls `next_op(sess)` and runs what it gets. Every worker
must build its queue from the same op list.
"""

import tensorflow.compat.v1 as tf


class OpQueue(object):
    """A shuffled, repeating queue over `ops`, driven by a `tf.data` iterator.

    Each pass over the queue is a permutation of the ops, so any `len(ops)`
    consecutive `next_op` calls starting at a pass boundary return every op once.

    Args:
      ops: non-empty list of ops (or tensors) of one graph, with distinct names.
      seed: shuffle seed; workers using the same seed get the same order.

    Raises:
      ValueError: if `ops` is empty.
    """

    def __init__(self, ops, seed=None):
        ops = list(ops)
        if not ops:
            raise ValueError("OpQueue: `ops` must be a non-empty list of ops; got [].")
        self._ops_by_name = {op.name: op for op in ops}
        # Sorted so that workers building the queue from the same ops agree on
        # the order before shuffling.
        names = sorted(self._ops_by_name)
        with ops[0].graph.as_default(), tf.name_scope("op_queue"):
            dataset = (
                tf.data.Dataset.from_tensor_slices(tf.constant(names))
                .shuffle(len(names), seed=seed)
                .repeat()
            )
            self._next_op_name = tf.data.make_one_shot_iterator(dataset).get_next()

    @property
    def ops(self):
        """The ops in the queue (a view of the name -> op dict values)."""
        return self._ops_by_name.values()

    def next_op(self, sess):
        """Advances the queue with one `sess.run` and returns the next op.

        No graph ops are created by this call.
        """
        name = sess.run(self._next_op_name)
        if isinstance(name, bytes):
            name = name.decode("utf-8")
        return self._ops_by_name[name]
