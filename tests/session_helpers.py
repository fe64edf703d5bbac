"""Running fetches in a fresh session (tests)."""

import tensorflow.compat.v1 as tf


def run(fetches, feed_dict=None, init=False):
    """`sess.run(fetches)` in a new session (after the initializers if `init`)."""
    with tf.Session() as sess:
        if init:
            sess.run(tf.global_variables_initializer())
        return sess.run(fetches, feed_dict=feed_dict)


def one_exact_kfac_step(
    loss, layer_collection, variables, learning_rate, damping, momentum=0.0
):
    """One `KfacOptimizer` step whose factors are this batch's statistics
    (`estimation_mode="exact"`, no moving average): covariance update, inverse
    update, training step. Returns the values of `variables` (a list or a
    dict) before and after the step."""
    import kfac

    var_list = list(variables.values()) if isinstance(variables, dict) else variables
    optimizer = kfac.KfacOptimizer(
        learning_rate,
        0.0,
        damping,
        layer_collection,
        var_list=list(var_list),
        momentum=momentum,
        estimation_mode="exact",
    )
    _, cov_update_op, _, inv_update_op, _, _ = optimizer.make_ops_and_vars()
    train_op = optimizer.minimize(loss)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(cov_update_op)
        sess.run(inv_update_op)
        before = sess.run(variables)
        sess.run(train_op)
        return before, sess.run(variables)


def exact_statistics(layer_collection, variables, fetch, refresh_bases=False):
    """`fetch(blocks)` evaluated after one covariance update of an estimator
    with `estimation_mode="exact"` and no moving average (the factors are the
    mini-batch statistics); with `refresh_bases`, then an inverse update and
    a second covariance update (EKFAC's scaling in the factors' eigenbases)."""
    from kfac.ops import estimator

    fisher = estimator.make_fisher_estimator(
        variables=list(variables),
        layer_collection=layer_collection,
        cov_ema_decay=0.0,
        damping=0.1,
        estimation_mode="exact",
    )
    cov_update_ops, _, inv_update_ops = fisher.make_ops_and_vars()[:3]
    blocks = list(layer_collection.get_blocks())
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(cov_update_ops)
        if refresh_bases:
            sess.run(inv_update_ops)
            sess.run(cov_update_ops)
        return sess.run(fetch(blocks))
