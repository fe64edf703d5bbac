"""Tests for kfac.ops.placement: round-robin placement of factors (API.md §7)."""

import re

import numpy as np
import tensorflow.compat.v1 as tf
from estimator_helpers import two_layer_model

from kfac.ops import estimator
from kfac.ops import utils

DEVICES = ["/cpu:0", "/cpu:1"]
CONFIG = tf.ConfigProto(device_count={"CPU": 4})


def _estimator(**kwargs):
    """A two-layer softmax model with 4 factors (A and G for each layer)."""
    lc, variables = two_layer_model(seed=0, batch=4, classes=2)
    return estimator.make_fisher_estimator(
        variables=list(variables),
        cov_ema_decay=0.5,
        damping=0.1,
        layer_collection=lc,
        estimation_mode="exact",
        **kwargs,
    )


def _inverse_variables(est):
    return [
        var
        for factor in est.factors
        for var in factor._matpower_by_exp_and_damping.values()
    ]


def test_round_robin_devices_for_ops_and_variables(tf_behavior):
    with tf.Graph().as_default():
        est = _estimator(cov_devices=DEVICES, inv_devices=DEVICES)
        assert est._cov_devices == DEVICES and est._inv_devices == DEVICES
        (
            cov_update_ops,
            cov_update_op,
            inv_update_ops,
            inv_update_op,
            cov_thunks,
            _,
        ) = est.make_ops_and_vars()
        assert len(cov_update_ops) == len(inv_update_ops) == len(est.factors) == 4
        expected = ["/device:CPU:{}".format(i % 2) for i in range(4)]
        assert [op.device for op in cov_update_ops] == expected
        assert [op.device for op in inv_update_ops] == expected
        assert [f.get_cov_var().device for f in est.factors] == expected
        inverses = _inverse_variables(est)
        assert inverses and all(var.device == "" for var in inverses)
        # Wrapped thunks place the ops they build on every call.
        assert cov_thunks[1]().device == "/device:CPU:1"
        # Grouped inside the estimator's scope (name scopes get uniquified).
        assert re.fullmatch(r"FisherEstimator(_\d+)?/cov_update_op", cov_update_op.name)
        assert re.fullmatch(r"FisherEstimator(_\d+)?/inv_update_op", inv_update_op.name)
        with tf.Session(config=CONFIG) as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(cov_update_op)
            sess.run(inv_update_op)
            values = sess.run(inverses)
    assert all(np.all(np.isfinite(v)) for v in values)
    assert not all(np.allclose(v, np.eye(v.shape[0])) for v in values)


def test_without_device_lists_the_caller_context_decides(tf_behavior):
    with tf.Graph().as_default():
        est = _estimator(cov_devices=DEVICES)
        with tf.device("/cpu:3"):
            _, _, inv_update_ops, _, _, _ = est.make_ops_and_vars()
        assert [f.get_cov_var().device for f in est.factors] == [
            "/device:CPU:{}".format(i % 2) for i in range(4)
        ]
        # Inverse variables and ops are never placed by the mixin itself.
        assert all(v.device == "/device:CPU:3" for v in _inverse_variables(est))
        assert all(op.device == "/device:CPU:3" for op in inv_update_ops)


def test_thunks_under_case_and_batch_execute(tf_behavior):
    with tf.Graph().as_default():
        est = _estimator(cov_devices=DEVICES, inv_devices=DEVICES)
        global_step = tf.train.get_or_create_global_step()
        cov_thunks, inv_thunks = est.make_vars_and_create_op_thunks()

        def branch(thunk):
            def run():
                with tf.control_dependencies([thunk()]):
                    return tf.constant(0)

            return run

        cov_update = tf.case(
            [(tf.equal(global_step, i), branch(t)) for i, t in enumerate(cov_thunks)],
            default=lambda: tf.constant(0),
            exclusive=True,
        )
        # 2 of the 4 inverse updates per step, round robin (utils.batch_execute).
        inv_update = utils.batch_execute(global_step, inv_thunks, batch_size=2)
        increment = tf.assign_add(global_step, 1)
        covs = [factor.get_cov_var() for factor in est.factors]
        inverses = _inverse_variables(est)
        assert len(inverses) == 4  # one per factor

        def changed(before, after):
            return [
                i
                for i, (a, b) in enumerate(zip(before, after))
                if not np.allclose(a, b)
            ]

        with tf.Session(config=CONFIG) as sess:
            sess.run(tf.global_variables_initializer())
            for step in range(len(cov_thunks)):
                before = sess.run(covs)
                sess.run(cov_update)
                assert changed(before, sess.run(covs)) == [step]
                sess.run(increment)
            # At step 4, thunk j runs iff (1 + 4 * 2 - j) mod 4 < 2: j = 0, 1.
            before = sess.run(inverses)
            sess.run(inv_update)
            assert changed(before, sess.run(inverses)) == [0, 1]
