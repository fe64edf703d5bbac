"""Bad input fails at graph-construction time, with a clear error.

One table: each row builds something wrong and names the exception type and a
fragment of its message (which names the argument and the offending value or
shape). Registration errors are raised by the `register_*` call itself;
optimizer errors by the constructor or `set_damping_adaptation_params`; the
registration/variable mismatches when the first op is built (`minimize`).
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import kfac
from kfac.ops import estimator
from kfac.ops import fisher_blocks
from kfac.ops import layer_collection
from kfac.ops import utils


class Env(object):
    """A small float32 model: fc layer (3 → 2, bias), conv, embedding, loss."""

    def __init__(self):
        self.w = tf.get_variable("w", [3, 2])
        self.b = tf.get_variable("b", [2])
        self.x = tf.zeros([4, 3])
        self.out = tf.matmul(self.x, self.w) + self.b
        self.kernel = tf.get_variable("kernel", [3, 3, 2, 4])
        self.image = tf.zeros([4, 8, 8, 2])
        self.conv_out = tf.nn.conv2d(self.image, self.kernel, [1, 1, 1, 1], "SAME")
        self.embedding = tf.get_variable("embedding", [10, 3])
        self.ids = tf.zeros([4], tf.int32)
        self.lc = kfac.LayerCollection()

    def registered(self):
        """A complete collection for the fc layer alone (and its loss)."""
        lc = kfac.LayerCollection()
        lc.register_fully_connected((self.w, self.b), self.x, self.out)
        lc.register_categorical_predictive_distribution(self.out)
        return lc

    def optimizer(self, **kwargs):
        arguments = dict(learning_rate=0.1, cov_ema_decay=0.9, damping=0.1,
                         layer_collection=self.registered(),
                         var_list=[self.w, self.b])
        arguments.update(kwargs)
        return kfac.KfacOptimizer(**arguments)

    def minimize(self, loss=None, **kwargs):
        loss = tf.reduce_sum(self.out) if loss is None else loss
        return self.optimizer(**kwargs).minimize(loss)


def _twice(env):
    env.lc.register_fully_connected((env.w, env.b), env.x, env.out)
    env.lc.register_fully_connected((env.w, env.b), env.x, env.out, reuse=False)


def _shared_variable(env):
    env.lc.register_fully_connected((env.w, env.b), env.x, env.out)
    env.lc.register_generic(env.w, batch_size=4)


def _mixed_dtypes(env):
    env.lc.register_fully_connected((env.w, env.b), env.x, env.out)
    w64 = tf.get_variable("w64", [3, 2], tf.float64)
    x64 = tf.zeros([4, 3], tf.float64)
    env.lc.register_fully_connected(w64, x64, tf.matmul(x64, w64))


def _integer_params(env):
    counts = tf.get_variable("counts", [3], tf.int32, trainable=False)
    env.lc.register_generic(counts, batch_size=4)


def _loss_name_clash(env):
    env.lc.register_categorical_predictive_distribution(env.out, name="logits")
    env.lc.register_categorical_predictive_distribution(env.out, name="logits")


def _unregistered_variable(env):
    extra = tf.get_variable("extra", [2])
    loss = tf.reduce_sum(env.out * extra)
    env.optimizer(var_list=None).minimize(loss)


def _no_loss(env):
    env.lc.register_fully_connected((env.w, env.b), env.x, env.out)
    kfac.KfacOptimizer(0.1, 0.9, 0.1, env.lc, var_list=[env.w, env.b]).minimize(
        tf.reduce_sum(env.out))


def _adaptation(env, **kwargs):
    arguments = dict(is_chief=True, prev_train_batch=env.x, loss_fn=lambda _: 0.0)
    arguments.update(kwargs)
    optimizer_kwargs = {"batch_size": 4}
    optimizer_kwargs.update(arguments.pop("optimizer_kwargs", {}))
    env.optimizer(**optimizer_kwargs).set_damping_adaptation_params(**arguments)


def _adaptation_twice(env):
    opt = env.optimizer(batch_size=4)
    for _ in range(2):
        opt.set_damping_adaptation_params(True, env.x, lambda _: 0.0)


def _adaptation_without_global_step(env):
    opt = env.optimizer(batch_size=4)
    opt.set_damping_adaptation_params(True, env.x, lambda _: 0.0)
    opt.minimize(tf.reduce_sum(env.out))


def _apply_gradients_missing_variable(env):
    opt = env.optimizer()
    opt.apply_gradients([(tf.zeros([3, 2]), env.w)])


BAD_INPUTS = [
    # --- registration: shapes and ranks
    ("fc weights rank 3",
     lambda env: env.lc.register_fully_connected(
         tf.get_variable("w3", [3, 2, 1]), env.x, env.out),
     ValueError,
     r"register_fully_connected: `inputs` has shape \(4, 3\); expected shape "
     r"\[batch, 6\] to match weights of shape \(3, 2, 1\)"),
    ("fc inputs width",
     lambda env: env.lc.register_fully_connected(
         (env.w, env.b), tf.zeros([4, 5]), env.out),
     ValueError, r"`inputs` has shape \(4, 5\); expected shape \[batch, 3\]"),
    ("fc outputs width",
     lambda env: env.lc.register_fully_connected(
         (env.w, env.b), env.x, tf.zeros([4, 7])),
     ValueError, r"`outputs` has shape \(4, 7\); expected shape \[batch, 2\]"),
    ("fc batch mismatch",
     lambda env: env.lc.register_fully_connected(
         (env.w, env.b), env.x, tf.zeros([5, 2])),
     ValueError, r"must have the same batch size"),
    ("fc bias shape",
     lambda env: env.lc.register_fully_connected(
         (env.w, tf.get_variable("b5", [5])), env.x, env.out),
     ValueError, r"`params\[1\]` has shape \(5,\); expected shape \[2\]"),
    ("fc params tuple of 3",
     lambda env: env.lc.register_fully_connected(
         (env.w, env.b, env.b), env.x, env.out),
     ValueError, r"a \(weights, bias\) pair; got a tuple of length 3"),
    ("fc dtype within a layer",
     lambda env: env.lc.register_fully_connected(
         (env.w, env.b), tf.zeros([4, 3], tf.float64), env.out),
     ValueError, r"must share one dtype; got `params` float32.*`inputs` float64"),
    ("conv strides length",
     lambda env: env.lc.register_conv2d(
         env.kernel, [1, 1, 1], "SAME", env.image, env.conv_out),
     ValueError, r"`strides` must be a list of 4 positive ints .*\[1, 1, 1\]"),
    ("conv padding",
     lambda env: env.lc.register_conv2d(
         env.kernel, [1, 1, 1, 1], "same", env.image, env.conv_out),
     ValueError, r"`padding` must be one of \['SAME', 'VALID'\]; got 'same'"),
    ("conv data_format",
     lambda env: env.lc.register_conv2d(
         env.kernel, [1, 1, 1, 1], "SAME", env.image, env.conv_out,
         data_format="NCHW"),
     ValueError, r"`data_format` must be None or 'NHWC'.*'NCHW'"),
    ("conv input channels",
     lambda env: env.lc.register_conv2d(
         env.kernel, [1, 1, 1, 1], "SAME", tf.zeros([4, 8, 8, 3]), env.conv_out),
     ValueError,
     r"`inputs` has shape \(4, 8, 8, 3\); expected shape \[batch, \.\.\., 2\]"),
    ("embedding float ids",
     lambda env: env.lc.register_embedding(
         env.embedding, tf.zeros([4]), tf.zeros([4, 3])),
     ValueError, r"`inputs` must hold integer ids; got dtype float32"),
    ("embedding with bias",
     lambda env: env.lc.register_embedding(
         (env.embedding, env.b), env.ids, tf.zeros([4, 3])),
     ValueError, r"register_embedding: Bias not supported"),
    ("generic batch size",
     lambda env: env.lc.register_generic(env.w, batch_size=0),
     ValueError, r"register_generic: `batch_size` must be positive; got 0"),
    ("normal predictive variance",
     lambda env: env.lc.register_normal_predictive_distribution(env.out, var=-1.0),
     ValueError, r"`var` must be positive; got -1.0"),
    ("multi uses disagree",
     lambda env: env.lc.register_fully_connected_multi(
         env.w, [env.x, env.x], [env.out], num_uses=2),
     ValueError, r"the number of uses disagrees: inputs 2, outputs 1, num_uses 2"),
    # --- registration: approximations, duplicates, dtypes
    ("unknown fc approximation",
     lambda env: env.lc.register_fully_connected(
         (env.w, env.b), env.x, env.out, approx="kronecker"),
     ValueError, r"Bad value 'kronecker' for approx.*\['diagonal', 'ekfac', 'kron', "
     r"'kron_expand', 'kron_reduce'\]"),
    ("unknown default approximation",
     lambda env: env.lc.set_default_conv2d_approximation("full"),
     ValueError, r"Bad value 'full' for approx"),
    ("unknown depthwise approximation",
     lambda env: env.lc.register_depthwise_conv2d(
         tf.get_variable("dw", [3, 3, 2, 1]), env.image, tf.zeros([4, 8, 8, 2]),
         [1, 1, 1, 1], "SAME", approx="kron"),
     ValueError, r"Bad value 'kron' for approx"),
    ("parameters registered twice", _twice,
     ValueError, r"already in LayerCollection"),
    ("variable in two blocks", _shared_variable,
     ValueError, r"variable w:0 was already registered"),
    ("reuse without a block",
     lambda env: env.lc.register_fully_connected(
         (env.w, env.b), env.x, env.out, reuse=True),
     KeyError, r"No FisherBlock registered"),
    ("loss name taken", _loss_name_clash, KeyError, r"logits already exists"),
    ("mixed dtypes across layers", _mixed_dtypes,
     ValueError,
     r"must share one dtype.*w64:0 has dtype float64.*w:0 has dtype float32"),
    # --- optimizer hyperparameters and option combinations
    ("unknown momentum_type", lambda env: env.optimizer(momentum_type="nesterov"),
     ValueError, r"Unsupported momentum_type 'nesterov'"),
    ("learning rate negative", lambda env: env.optimizer(learning_rate=-0.1),
     ValueError, r"learning_rate must be > 0 and finite; got -0.1"),
    ("learning rate infinite", lambda env: env.optimizer(learning_rate=np.inf),
     ValueError, r"learning_rate must be > 0 and finite; got inf"),
    ("damping negative", lambda env: env.optimizer(damping=-1e-3),
     ValueError, r"damping must be non-negative and finite; got -0.001"),
    ("damping NaN", lambda env: env.optimizer(damping=float("nan")),
     ValueError, r"damping must be non-negative and finite; got nan"),
    ("cov_ema_decay above one", lambda env: env.optimizer(cov_ema_decay=1.01),
     ValueError, r"cov_ema_decay must be in \[0, 1\]; got 1.01"),
    ("cov_ema_decay negative", lambda env: env.optimizer(cov_ema_decay=-0.5),
     ValueError, r"cov_ema_decay must be in \[0, 1\]; got -0.5"),
    ("momentum one", lambda env: env.optimizer(momentum=1.0),
     ValueError, r"momentum must be in \[0, 1\); got 1.0"),
    ("norm constraint negative", lambda env: env.optimizer(norm_constraint=-2.0),
     ValueError, r"norm_constraint must be > 0 and finite; got -2.0"),
    ("norm constraint with adam",
     lambda env: env.optimizer(momentum_type="adam", norm_constraint=1.0),
     ValueError, r"norm_constraint .* only supported with momentum_type 'regular'"),
    ("qmodel with momentum",
     lambda env: env.optimizer(momentum_type="qmodel", batch_size=4),
     ValueError, r"momentum must be 0 with momentum_type 'qmodel'.*momentum=0.9"),
    ("qmodel without batch size",
     lambda env: env.optimizer(momentum_type="qmodel", momentum=0.0),
     ValueError, r"batch_size is required with momentum_type 'qmodel'"),
    ("batch size zero", lambda env: env.optimizer(batch_size=0),
     ValueError, r"batch_size must be > 0 and finite; got 0"),
    ("unknown estimation_mode", lambda env: env.optimizer(estimation_mode="exactly"),
     ValueError, r"Unrecognized value 'exactly' for estimation_mode"),
    ("unknown non_finite_policy", lambda env: env.optimizer(non_finite_policy="ignore"),
     ValueError, r"non_finite_policy must be one of \['skip', 'raise', None\]; "
                 r"got 'ignore'"),
    ("unknown placement", lambda env: env.optimizer(placement_strategy="replicas"),
     ValueError, r"Unimplemented vars and ops placement strategy: 'replicas'"),
    ("no layer collection", lambda env: env.optimizer(layer_collection=None),
     ValueError, r"layer_collection must be a LayerCollection; got None"),
    # --- damping adaptation
    ("loss_fn not callable", lambda env: _adaptation(env, loss_fn=0.5),
     ValueError, r"loss_fn must be callable .*got 0.5"),
    ("adaptation interval zero",
     lambda env: _adaptation(env, damping_adaptation_interval=0),
     ValueError, r"damping_adaptation_interval must be a positive integer; got 0"),
    ("adaptation decay above one",
     lambda env: _adaptation(env, damping_adaptation_decay=1.5),
     ValueError, r"damping_adaptation_decay must be in \(0, 1\]; got 1.5"),
    ("min damping negative", lambda env: _adaptation(env, min_damping=-1.0),
     ValueError, r"min_damping must be non-negative and finite; got -1.0"),
    ("adaptation without batch size",
     lambda env: _adaptation(env, optimizer_kwargs={"batch_size": None}),
     ValueError, r"batch_size is required for damping adaptation"),
    ("adaptation enabled twice", _adaptation_twice,
     ValueError, r"Damping adaptation parameters already set"),
    ("adaptation without global_step", _adaptation_without_global_step,
     KeyError, r"global_step needs to be passed"),
    # --- when the first op is built
    ("trainable variable without a block", _unregistered_variable,
     ValueError, r"Variable extra:0 is not registered"),
    ("no loss registered", _no_loss,
     ValueError, r"Must have at least one registered loss"),
    ("var_list of minimize",
     lambda env: env.optimizer().minimize(tf.reduce_sum(env.out), var_list=[env.w]),
     ValueError, r"var_list must contain exactly the variables.*missing: \['b:0'\]"),
    ("var_list of the optimizer", lambda env: env.minimize(var_list=[env.w]),
     ValueError, r"1 registered variables were not included in the list: b:0"),
    ("gradients for some variables only", _apply_gradients_missing_variable,
     ValueError, r"grads_and_vars must contain exactly.*missing: \['b:0'\]"),
    # --- lower-level options
    ("estimator non_finite_policy",
     lambda env: estimator.FisherEstimatorRoundRobin(
         variables=[env.w], cov_ema_decay=0.9, damping=0.1,
         layer_collection=env.lc, non_finite_policy="warn"),
     ValueError, r"non_finite_policy must be one of"),
    ("unknown posdef_inv_method",
     lambda env: utils.set_global_constants(posdef_inv_method="lu"),
     ValueError, r"posdef_inv_method must be one of .*got 'lu'"),
    ("unknown pi type",
     lambda env: fisher_blocks.set_global_constants(pi_type="bogus"),
     ValueError, r"pi_type must be one of \('off', 'tracenorm'\), got 'bogus'"),
]


def test_the_table_has_enough_distinct_cases():
    assert len(BAD_INPUTS) >= 25
    assert len({case[0] for case in BAD_INPUTS}) == len(BAD_INPUTS)


# Ops made implicitly by minimize warn (DeprecationWarning); not the point here.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("build, error, fragment",
                         [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS])
def test_bad_input_raises_a_clear_error(build, error, fragment):
    with tf.Graph().as_default():
        env = Env()
        with pytest.raises(error, match=fragment):
            build(env)


# What the original accepted is registered, with a warning naming the problem.
QUESTIONABLE_INPUTS = [
    ("conv output spatial size",
     lambda env: env.lc.register_conv2d(
         env.kernel, [1, 2, 2, 1], "SAME", env.image, env.conv_out),
     r"`outputs` has shape \(4, 8, 8, 4\); expected shape \[batch, 4, 4, 4\]"),
    ("integer parameters", _integer_params,
     r"`params` counts:0 has dtype int32; only floating parameters can be trained"),
]


@pytest.mark.parametrize(
    "build, fragment",
    [case[1:] for case in QUESTIONABLE_INPUTS],
    ids=[case[0] for case in QUESTIONABLE_INPUTS],
)
def test_questionable_input_warns_and_registers(build, fragment):
    with tf.Graph().as_default():
        env = Env()
        with pytest.warns(layer_collection.RegistrationWarning, match=fragment):
            build(env)
        assert len(env.lc.fisher_blocks) == 1


def test_a_zero_learning_rate_warns_and_leaves_the_variables():
    """The original ran learning_rate=0 (e.g. to measure without training)."""
    with tf.Graph().as_default():
        env = Env()
        with pytest.warns(UserWarning, match=r"learning_rate is 0, so no step"):
            train_op = env.minimize(learning_rate=0.0)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            before = sess.run([env.w, env.b])
            sess.run(train_op)
            after = sess.run([env.w, env.b])
        for old, new in zip(before, after):
            np.testing.assert_array_equal(old, new)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_good_registration_passes_the_same_checks():
    """The table's model itself is valid: the errors come from the bad pieces."""
    with tf.Graph().as_default():
        env = Env()
        env.lc.register_fully_connected((env.w, env.b), env.x, env.out)
        env.lc.register_conv2d(env.kernel, [1, 1, 1, 1], "SAME", env.image,
                               env.conv_out)
        env.lc.register_embedding(env.embedding, env.ids, tf.zeros([4, 3]))
        env.minimize()
