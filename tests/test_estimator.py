"""Tests for kfac.ops.estimator (API.md §7), checked against numpy Fisher factors:
estimation modes, construction, variables and thunks, towers.

Products with the damped estimate are in test_estimator_products.py.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from estimator_helpers import BATCH
from estimator_helpers import CLASSES
from estimator_helpers import DAMPING
from estimator_helpers import data
from estimator_helpers import exact_output_factor
from estimator_helpers import make_estimator
from estimator_helpers import run_updates
from estimator_helpers import softmax_regression
from estimator_helpers import with_ones

from kfac.ops import estimator
from kfac.ops import fisher_factors as ff
from kfac.ops import layer_collection as lc_lib

# --------------------------------------------------------------------------
# Estimation modes.


@pytest.mark.parametrize("mode", ["gradients", "empirical", "curvature_prop", "exact"])
def test_estimation_modes_produce_finite_factors(mode, tf_behavior):
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        lc, params, x_np, probs = softmax_regression()
        est = make_estimator(lc, params, estimation_mode=mode)
        _, cov_update_op, _, inv_update_op, _, _ = est.make_ops_and_vars()
        [block] = list(est.blocks)
        with tf.Session() as sess:
            run_updates(sess, cov_update_op, inv_update_op)
            input_cov, output_cov = sess.run(
                [block._input_factor.get_cov(), block._output_factor.get_cov()]
            )
    # The input factor does not depend on the gradient signal.
    x1 = with_ones(x_np)
    np.testing.assert_allclose(input_cov, x1.T @ x1 / BATCH, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(output_cov))
    np.testing.assert_allclose(output_cov, output_cov.T, atol=1e-6)
    assert np.linalg.eigvalsh(output_cov).min() > -1e-6
    if mode == "exact":
        np.testing.assert_allclose(
            output_cov, exact_output_factor(probs), rtol=1e-5, atol=1e-6
        )
    if mode == "empirical":
        # Data targets: G = (1/B) Σ_b (p_b − y_b)(p_b − y_b)ᵀ.
        residual = probs - np.eye(CLASSES)[data()[3]]
        np.testing.assert_allclose(
            output_cov, residual.T @ residual / BATCH, rtol=1e-5, atol=1e-6
        )


def test_unknown_estimation_mode_is_reported_when_ops_are_made():
    with tf.Graph().as_default():
        lc, params, _, _ = softmax_regression()
        est = make_estimator(lc, params, estimation_mode="bogus")  # not checked yet
        with pytest.raises(
            ValueError,
            match=r"'bogus'.*'gradients', 'empirical', "
            r"'curvature_prop', 'exact'",
        ):
            est.make_ops_and_vars()


def test_registration_problems_are_reported_when_ops_are_made():
    with tf.Graph().as_default():
        lc, params, _, _ = softmax_regression()
        est = make_estimator(lc, params[:1])  # the bias is registered but not listed
        with pytest.raises(ValueError, match="b:0"):
            est.make_vars_and_create_op_thunks()
        empty = make_estimator(lc_lib.LayerCollection(), [])
        with pytest.raises(ValueError, match="at least one registered loss"):
            empty.create_ops_and_vars_thunks()


def test_one_tuple_params_and_variable_lists():
    # The setup of the original estimator tests: weights registered as `(w,)`
    # (a sequence, hence "with bias"), the bias used but not registered.
    with tf.Graph().as_default():
        lc = lc_lib.LayerCollection()
        inputs = tf.random_normal((2, 2))
        w = tf.get_variable("w", shape=(2, 2))
        b = tf.get_variable("b", initializer=tf.zeros_initializer(), shape=(2, 1))
        output = tf.matmul(inputs, w) + b
        lc.register_fully_connected(params=(w,), inputs=inputs, outputs=output)
        lc.register_categorical_predictive_distribution(
            logits=tf.tanh(output), targets=tf.zeros_like(output)
        )
        for variables, fragment in (
            ([w, b], "b:0 is not registered"),
            ([], "not included in the list: w:0"),
        ):
            with pytest.raises(ValueError, match=fragment):
                make_estimator(lc, variables).make_ops_and_vars()
        est = make_estimator(lc, [w])
        est.make_ops_and_vars()
        [block] = list(est.blocks)
        assert block._input_factor.get_cov_var().shape.as_list() == [3, 3]


def test_make_fisher_estimator_and_properties():
    with tf.Graph().as_default():
        lc, params, _, _ = softmax_regression()
        est = make_estimator(lc, params, name="est")
        assert isinstance(est, estimator.FisherEstimatorRoundRobin)
        assert isinstance(est, estimator.FisherEstimator)
        assert est.variables == list(params) and est.damping == DAMPING
        assert est.name == "est" and not est.made_vars()
        assert list(est.blocks) == list(lc.get_blocks())
        assert len(est.factors) == 0  # factors appear when ops are made
        est.make_ops_and_vars()
        assert est.made_vars() and len(est.factors) == 2
        round_robin = estimator.make_fisher_estimator(
            "round_robin",
            variables=list(params),
            cov_ema_decay=0.9,
            damping=1.0,
            layer_collection=lc,
        )
        assert isinstance(round_robin, estimator.FisherEstimatorRoundRobin)
        with pytest.raises(ValueError, match="'replica'"):
            estimator.make_fisher_estimator(
                "replica",
                variables=[],
                cov_ema_decay=0.9,
                damping=1.0,
                layer_collection=lc,
            )


@pytest.mark.parametrize(
    "first,second",
    [
        ("make_ops_and_vars", "make_ops_and_vars"),
        ("make_vars_and_create_op_thunks", "make_ops_and_vars"),
        ("create_ops_and_vars_thunks", "make_vars_and_create_op_thunks"),
    ],
)
def test_already_made_variables(first, second):
    with tf.Graph().as_default():
        lc, params, _, _ = softmax_regression()
        est = make_estimator(lc, params)
        getattr(est, first)()
        with pytest.raises(
            estimator.VariablesAlreadyMadeError, match="Already made variables."
        ) as error:
            getattr(est, second)()
        assert isinstance(error.value, ValueError)
        assert isinstance(error.value, RuntimeError)


def test_variable_names_and_scope():
    with tf.Graph().as_default():
        lc, params, _, _ = softmax_regression()
        est = make_estimator(lc, params)
        est.make_ops_and_vars(scope="my_scope")
        [block] = list(est.blocks)
        cov = block._input_factor.get_cov_var()
        assert cov.name.startswith("my_scope/") and cov.name.endswith("/cov:0")
        inverses = list(block._input_factor._matpower_by_exp_and_damping.values())
        assert len(inverses) == 1
        assert inverses[0].name.startswith("my_scope/")
        assert "matpower_exp-1_damp" in inverses[0].name
        default = make_estimator(lc_lib.LayerCollection(), [])
        assert default.name == "FisherEstimator"


def test_thunks_can_be_called_repeatedly_inside_cond(tf_behavior):
    with tf.Graph().as_default():
        lc, params, x_np, probs = softmax_regression()
        est = make_estimator(lc, params, estimation_mode="exact", cov_ema_decay=0.5)
        cov_thunks, inv_thunks = est.make_vars_and_create_op_thunks()
        flag = tf.placeholder(tf.bool, [])

        def run_all(thunks):
            ops = [thunk() for thunk in thunks]
            with tf.control_dependencies(ops):
                return tf.constant(True)

        cov_update = tf.cond(
            flag, lambda: run_all(cov_thunks), lambda: tf.constant(False)
        )
        inv_update = tf.cond(
            flag, lambda: run_all(inv_thunks), lambda: tf.constant(False)
        )
        direct = [thunk() for thunk in cov_thunks]  # a second call builds new ops
        [block] = list(est.blocks)
        output_factor = block._output_factor
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(cov_update, {flag: False})
            np.testing.assert_allclose(
                sess.run(output_factor.get_cov()), np.eye(CLASSES)
            )
            sess.run(cov_update, {flag: True})
            sess.run(direct)
            sess.run(inv_update, {flag: True})
            cov, inverse = sess.run(
                [
                    output_factor.get_cov(),
                    list(output_factor._matpower_by_exp_and_damping.values())[0],
                ]
            )
    exact = exact_output_factor(probs)
    # Two EMA steps with decay 0.5 from the identity.
    np.testing.assert_allclose(cov, 0.25 * np.eye(CLASSES) + 0.75 * exact, atol=1e-5)
    assert not np.allclose(inverse, np.eye(CLASSES))


# --------------------------------------------------------------------------
# Towers.


@pytest.fixture
def tower_strategy():
    def set_strategy(strategy):
        ff.set_global_constants(tower_strategy=strategy)

    yield set_strategy
    ff.set_global_constants(tower_strategy="concat")


@pytest.mark.parametrize("strategy", ["concat", "separate"])
def test_two_towers_equal_one_tower_on_the_whole_batch(
    strategy, tower_strategy, tf_behavior
):
    tower_strategy(strategy)
    with tf.Graph().as_default():
        lc, params, x_np, probs = softmax_regression(towers=2)
        [block] = list(lc.get_blocks())
        assert block.num_registered_towers == 2 and len(lc.towers_by_loss[0]) == 2
        est = make_estimator(lc, params, estimation_mode="exact")
        _, cov_update_op, _, inv_update_op, _, _ = est.make_ops_and_vars()
        with tf.Session() as sess:
            run_updates(sess, cov_update_op, inv_update_op)
            input_cov, output_cov = sess.run(
                [block._input_factor.get_cov(), block._output_factor.get_cov()]
            )
    x1 = with_ones(x_np)
    np.testing.assert_allclose(input_cov, x1.T @ x1 / BATCH, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        output_cov, exact_output_factor(probs), rtol=1e-5, atol=1e-6
    )
