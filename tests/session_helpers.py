"""Running fetches in a fresh session (tests)."""

import tensorflow.compat.v1 as tf


def run(fetches, feed_dict=None, init=False):
    """`sess.run(fetches)` in a new session (after the initializers if `init`)."""
    with tf.Session() as sess:
        if init:
            sess.run(tf.global_variables_initializer())
        return sess.run(fetches, feed_dict=feed_dict)
