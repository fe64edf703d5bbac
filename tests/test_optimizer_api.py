"""Tests of KfacOptimizer's construction, properties, explicit op creation and
training API (compute/apply_gradients, minimize, SyncReplicas, Estimator)."""

import warnings

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from optimizer_reference import SoftmaxRegression
from optimizer_reference import mat2d
from optimizer_reference import numpy_steps
from optimizer_reference import softmax_regression_data

import kfac


def _empty_optimizer(**kwargs):
    return kfac.KfacOptimizer(0.1, 0.2, 0.3, kfac.LayerCollection(), **kwargs)


# --------------------------------------------------------------------------
# Construction, properties, explicit op creation.


def test_constructor_positional_order_and_defaults():
    with tf.Graph().as_default():
        w = tf.get_variable("w", [2, 2])
        lc = kfac.LayerCollection()
        opt = kfac.KfacOptimizer(0.1, 0.2, 0.3, lc)
        assert opt._learning_rate == 0.1
        assert opt._cov_ema_decay == 0.2
        assert opt.damping == 0.3
        assert opt._layers is lc
        assert opt._momentum == 0.9 and opt._momentum_type == "regular"
        assert opt._norm_constraint is None and opt._batch_size is None
        assert opt.get_name() == "KFAC"
        assert opt.damping_adaptation_interval == 5
        assert opt._fisher_est._damping == 0.3
        assert opt._fisher_est._estimation_mode == "gradients"
        assert tuple(opt._fisher_est._exps) == (-1,)
        assert opt.variables == [w]


def test_var_list_defaults_to_trainable_variables_at_construction():
    with tf.Graph().as_default():
        w = tf.get_variable("w", [2, 2])
        tf.get_variable("frozen", [2], trainable=False)
        opt = kfac.KfacOptimizer(0.1, 0.2, 0.3, kfac.LayerCollection())
        tf.get_variable("later", [2])
        assert opt.variables == [w]
        explicit = kfac.KfacOptimizer(0.1, 0.2, 0.3, kfac.LayerCollection(),
                                      var_list=(v for v in [w]), name="KFAC2")
        assert explicit.variables == [w]


def test_momentum_type_is_lower_cased():
    with tf.Graph().as_default():
        opt = _empty_optimizer(momentum_type="QModel", momentum=0, batch_size=4)
        assert opt._momentum_type == "qmodel"
        opt = _empty_optimizer(momentum_type="ADAM", name="K2")
        assert opt._momentum_type == "adam"


def test_momentum_type_is_checked_before_anything_is_built():
    with pytest.raises(ValueError, match="momentum_type.*'regular', 'adam', 'qmodel'"):
        kfac.KfacOptimizer(0.1, 0.2, 0.3, None, momentum_type="foo")


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(momentum_type="foo"), "momentum_type 'foo'"),
    (dict(momentum_type=3), "momentum_type"),
    (dict(momentum_type="adam", norm_constraint=1.0), "norm_constraint"),
    (dict(momentum_type="qmodel", batch_size=4), "momentum must be 0"),
    (dict(momentum_type="qmodel", momentum=0), "batch_size is required"),
    (dict(learning_rate=-1.0), "learning_rate must be > 0"),
    (dict(damping=-0.1), "damping must be non-negative"),
    (dict(damping=float("nan")), "damping must be non-negative"),
    (dict(cov_ema_decay=1.5), r"cov_ema_decay must be in \[0, 1\]"),
    (dict(cov_ema_decay=-0.1), r"cov_ema_decay must be in \[0, 1\]"),
    (dict(momentum=1.0), r"momentum must be in \[0, 1\)"),
    (dict(momentum=-0.5), r"momentum must be in \[0, 1\)"),
    (dict(norm_constraint=0.0), "norm_constraint must be > 0"),
    (dict(batch_size=0), "batch_size must be > 0"),
    (dict(layer_collection=None), "layer_collection"),
])
def test_constructor_validation(kwargs, fragment):
    with tf.Graph().as_default():
        arguments = dict(learning_rate=0.1, cov_ema_decay=0.2, damping=0.3,
                         layer_collection=kfac.LayerCollection())
        arguments.update(kwargs)
        with pytest.raises(ValueError, match=fragment):
            kfac.KfacOptimizer(**arguments)




def test_estimator_kwargs_are_forwarded():
    with tf.Graph().as_default():
        opt = _empty_optimizer(cov_devices=["/cpu:0"], inv_devices=["/cpu:0"])
        assert list(opt._fisher_est._cov_devices) == ["/cpu:0"]
        assert list(opt._fisher_est._inv_devices) == ["/cpu:0"]
        with pytest.raises(ValueError):
            _empty_optimizer(placement_strategy="nonsense", name="K2")


def _cov_variable_names(model):
    return [factor.get_cov_var().op.name
            for factor in model.layer_collection.get_factors()]


def _softmax_model():
    return SoftmaxRegression(*softmax_regression_data())


def test_convenience_properties_warn_once_and_cache(tf_behavior):
    with tf.Graph().as_default():
        model = _softmax_model()
        opt = kfac.KfacOptimizer(0.1, 0.9, 0.1, model.layer_collection)
        with pytest.warns(DeprecationWarning, match="explicit"):
            cov_update_op = opt.cov_update_op
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert opt.cov_update_op is cov_update_op
            assert isinstance(opt.inv_update_op, tf.Operation)
            assert len(opt.cov_update_ops) == len(opt.inv_update_ops) == 2
            assert len(opt.cov_update_thunks) == len(opt.inv_update_thunks) == 2
            assert opt.inv_update_ops is opt.inv_update_ops
        cov_names = _cov_variable_names(model)
        assert all(name.startswith("KFAC/") for name in cov_names), cov_names
        # The ops were made: an explicit make now fails.
        with pytest.raises(Exception, match="Already made"):
            opt.make_ops_and_vars()


@pytest.mark.parametrize("make", ["make_ops_and_vars", "make_vars_and_create_op_thunks",
                                  "create_ops_and_vars_thunks"])
def test_convenience_properties_unavailable_after_explicit_make(make):
    with tf.Graph().as_default():
        model = _softmax_model()
        opt = kfac.KfacOptimizer(0.1, 0.9, 0.1, model.layer_collection)
        getattr(opt, make)()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for name in ["cov_update_thunks", "cov_update_ops", "cov_update_op",
                         "inv_update_thunks", "inv_update_ops", "inv_update_op"]:
                with pytest.raises(AttributeError, match="explicit"):
                    getattr(opt, name)


def test_make_ops_and_vars_scope():
    with tf.Graph().as_default():
        model = _softmax_model()
        opt = kfac.KfacOptimizer(0.1, 0.9, 0.1, model.layer_collection, name="MyKFAC")
        result = opt.make_ops_and_vars()
        assert len(result) == 6
        names = _cov_variable_names(model)
        assert all(name.startswith("MyKFAC/") for name in names), names
        assert not any(name.startswith("MyKFAC/FisherEstimator") for name in names)


@pytest.mark.parametrize("make", ["make_vars_and_create_op_thunks",
                                  "create_ops_and_vars_thunks"])
def test_thunk_methods_scope(make):
    with tf.Graph().as_default():
        model = _softmax_model()
        opt = kfac.KfacOptimizer(0.1, 0.9, 0.1, model.layer_collection)
        result = getattr(opt, make)()
        if make == "create_ops_and_vars_thunks":
            assert len(result) == 4
            for thunk in result[0]:
                thunk()
        else:
            assert len(result) == 2
        names = _cov_variable_names(model)
        assert all(name.startswith("KFAC/FisherEstimator/") for name in names), names


# --------------------------------------------------------------------------
# Training API.


def test_velocity_slot_and_global_step(tf_behavior):
    with tf.Graph().as_default():
        model = _softmax_model()
        gs = tf.train.get_or_create_global_step()
        opt = kfac.KfacOptimizer(0.1, 0.9, 0.1, model.layer_collection)
        opt.make_ops_and_vars()
        train_op = opt.minimize(model.loss, global_step=gs)
        assert opt.get_slot_names() == ["velocity"]
        slots = [opt.get_slot(var, "velocity") for var in model.params]
        assert all(slot is not None for slot in slots)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for slot, var in zip(sess.run(slots), model.params):
                np.testing.assert_array_equal(slot, np.zeros(var.shape.as_list()))
            sess.run(train_op)
            sess.run(train_op)
            assert sess.run(gs) == 2
            assert np.abs(sess.run(slots[0])).sum() > 0


def test_minimize_makes_ops_implicitly_with_a_warning():
    with tf.Graph().as_default():
        model = _softmax_model()
        opt = kfac.KfacOptimizer(0.1, 0.9, 0.1, model.layer_collection)
        with pytest.warns(DeprecationWarning):
            train_op = opt.minimize(model.loss)
        cov_names = _cov_variable_names(model)
        assert all(name.startswith("KFAC/") and not name.startswith("KFAC/KFAC")
                   for name in cov_names), cov_names
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            before = sess.run(model.loss)
            for _ in range(3):
                sess.run([opt.cov_update_op])
                sess.run([opt.inv_update_op])
                sess.run(train_op)
            assert sess.run(model.loss) < before


def _exact_optimizer(data):
    """`(model, global_step, optimizer, cov_update_op, inv_update_op)` for one
    plain natural-gradient step (η 0.5, λ 0.1, no momentum, exact Fisher)."""
    model = SoftmaxRegression(*data)
    gs = tf.train.get_or_create_global_step()
    opt = kfac.KfacOptimizer(0.5, 0.0, 0.1, model.layer_collection, momentum=0.0,
                             estimation_mode="exact")
    _, cov_update_op, _, inv_update_op, _, _ = opt.make_ops_and_vars()
    return model, gs, opt, cov_update_op, inv_update_op


def _check_the_plain_step(sess, model, gs, data):
    """One step of `_exact_optimizer` was taken: numpy's natural-gradient step."""
    got = mat2d(*sess.run(model.params))
    assert sess.run(gs) == 1
    want = numpy_steps(data, 1, lr=0.5, damping=0.1)[1]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_compute_and_apply_gradients_accept_zip_and_global_step():
    data = softmax_regression_data()
    with tf.Graph().as_default():
        model, gs, opt, cov_update_op, inv_update_op = _exact_optimizer(data)
        grads_and_vars = opt.compute_gradients(model.loss)
        assert [var for _, var in grads_and_vars] == model.params
        grads, variables = zip(*grads_and_vars)
        train_op = opt.apply_gradients(zip(grads, variables), global_step=gs,
                                       name="kfac_step")
        assert train_op.name.startswith("kfac_step")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(cov_update_op)
            sess.run(inv_update_op)
            sess.run(train_op)
            _check_the_plain_step(sess, model, gs, data)


def test_var_list_mismatch_names_the_variables():
    with tf.Graph().as_default():
        model = _softmax_model()
        other = tf.get_variable("other", [2])
        opt = kfac.KfacOptimizer(0.1, 0.9, 0.1, model.layer_collection,
                                 var_list=model.params)
        with pytest.raises(ValueError, match=r"missing: \['b:0'\]"):
            opt.compute_gradients(model.loss, [model.weights])
        with pytest.raises(ValueError, match=r"missing: \['b:0'\]"):
            opt.compute_gradients(model.loss, var_list=[model.weights])
        with pytest.raises(ValueError, match=r"not estimated: \['other:0'\]"):
            opt.minimize(model.loss, var_list=model.params + [other])
        with pytest.raises(ValueError, match=r"grads_and_vars.*missing: \['w:0'\]"):
            opt.apply_gradients([(tf.zeros([3]), model.bias)])
        assert not opt._fisher_est.made_vars()
        with pytest.raises(ValueError, match="No gradient.*w:0"):
            opt.apply_gradients([(None, model.weights), (tf.zeros([3]), model.bias)])


def test_works_under_sync_replicas_optimizer(tf_behavior):
    data = softmax_regression_data()
    with tf.Graph().as_default():
        model, gs, opt, cov_update_op, inv_update_op = _exact_optimizer(data)
        sync_opt = tf.train.SyncReplicasOptimizer(opt, replicas_to_aggregate=1,
                                                  total_num_replicas=1)
        train_op = sync_opt.minimize(model.loss, global_step=gs)
        init_tokens_op = sync_opt.get_init_tokens_op()
        # What the chief's queue runner would run: aggregate, apply, release tokens.
        sync_op = sync_opt.get_chief_queue_runner().enqueue_ops[0]
        with tf.Session() as sess:
            sess.run([tf.global_variables_initializer(),
                      tf.local_variables_initializer()])
            sess.run(sync_opt.chief_init_op)
            sess.run(init_tokens_op)
            sess.run(cov_update_op)
            sess.run(inv_update_op)
            sess.run(train_op)
            sess.run(sync_op)
            _check_the_plain_step(sess, model, gs, data)


def test_works_in_an_estimator_model_fn(tmp_path):
    estimator_module = getattr(tf, "estimator", None)
    if estimator_module is None or not hasattr(estimator_module, "Estimator"):
        pytest.skip("tf.estimator is not available in this TensorFlow version")
    x_np, labels_np, _, _ = softmax_regression_data(batch=16, inputs=3, classes=3)

    def input_fn():
        return tf.data.Dataset.from_tensors(
            ({"x": x_np}, labels_np)).repeat()

    def model_fn(features, labels, mode):
        x = features["x"]
        w = tf.get_variable("w", [3, 3], initializer=tf.zeros_initializer())
        b = tf.get_variable("b", [3], initializer=tf.zeros_initializer())
        logits = tf.matmul(x, w) + b
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits))
        lc = kfac.LayerCollection()
        lc.register_fully_connected((w, b), x, logits)
        lc.register_categorical_predictive_distribution(logits)
        global_step = tf.train.get_or_create_global_step()
        opt = kfac.KfacOptimizer(0.5, 0.9, 0.1, lc, momentum=0.5)
        cov_update_thunks, inv_update_thunks = opt.make_vars_and_create_op_thunks()
        cov_update_op = tf.group(*[thunk() for thunk in cov_update_thunks])
        with tf.control_dependencies([cov_update_op]):
            inv_update_op = tf.group(*[thunk() for thunk in inv_update_thunks])
            with tf.control_dependencies([inv_update_op]):
                train_op = opt.minimize(loss, global_step=global_step)
        return tf.estimator.EstimatorSpec(mode=mode, loss=loss, train_op=train_op)

    config = tf.estimator.RunConfig(model_dir=str(tmp_path), save_summary_steps=None,
                                    log_step_count_steps=None)
    est = tf.estimator.Estimator(model_fn=model_fn, config=config)
    est.train(input_fn, steps=5)
    assert est.get_variable_value("global_step") == 5
    assert np.abs(est.get_variable_value("w")).sum() > 0
