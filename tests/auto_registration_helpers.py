"""Building a model twice, registered by hand and by `auto_register_layers` (tests).

`build_pair(build)` calls `build(layer_collection)` (which builds the model,
registers its layers and losses, and returns its training loss) in two fresh
graphs: once with a plain `LayerCollection` and once with `LossesOnly`,
which keeps the model code's loss registrations and drops its layer
registrations, then registers the layers with `auto_register_layers`. The
two graphs hold the same ops under the same names, so their registrations
can be compared tensor name by tensor name.
"""

import dataclasses

import numpy as np
import tensorflow.compat.v1 as tf

import kfac

_LOSS_METHODS = (
    "register_loss_function",
    "register_categorical_predictive_distribution",
    "register_normal_predictive_distribution",
    "register_multi_bernoulli_predictive_distribution",
)
LAYER_METHODS = tuple(
    name
    for name in dir(kfac.LayerCollection)
    if name.startswith("register_")
    and name not in _LOSS_METHODS
    and name != "register_block"
)


class LossesOnly(kfac.LayerCollection):
    """Ignores layer registrations while `building` (the model code's)."""

    building = True


def _ignored_while_building(name):
    original = getattr(kfac.LayerCollection, name)

    def method(self, *args, **kwargs):
        if self.building:
            return None
        return original(self, *args, **kwargs)

    return method


for _name in LAYER_METHODS:
    setattr(LossesOnly, _name, _ignored_while_building(_name))


def variable(name, shape, seed):
    """A float32 variable `randn(shape) / sqrt(fan-in)` from `RandomState(seed)`."""
    initial = np.random.RandomState(seed).randn(*shape) / np.sqrt(np.prod(shape[:-1]))
    return tf.get_variable(name, initializer=tf.constant(initial.astype(np.float32)))


def classifier_head(layer_collection, features, classes=3):
    """A registered dense head `features @ W + b` with a categorical loss on the
    placeholder "labels"; returns the mean cross-entropy."""
    flat = tf.reshape(features, [features.shape[0], -1])
    weights = variable("head/weights", [int(flat.shape[1]), classes], 7)
    bias = variable("head/bias", [classes], 8)
    logits = tf.nn.bias_add(tf.matmul(flat, weights), bias)
    layer_collection.register_fully_connected((weights, bias), flat, logits)
    layer_collection.register_categorical_predictive_distribution(logits)
    labels = tf.placeholder(tf.int64, [features.shape[0]], name="labels")
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )


@dataclasses.dataclass
class Built:
    graph: tf.Graph
    layer_collection: kfac.LayerCollection
    loss: tf.Tensor
    registrations: list = None


def build(build_fn, auto: bool, seed: int = 0, **auto_kwargs) -> Built:
    """`build_fn(layer_collection)` in a new graph; auto-registered if `auto`."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        layer_collection = LossesOnly() if auto else kfac.LayerCollection()
        loss = build_fn(layer_collection)
        registrations = None
        if auto:
            layer_collection.building = False
            registrations = layer_collection.auto_register_layers(**auto_kwargs)
    return Built(graph, layer_collection, loss, registrations)


def build_pair(build_fn, **auto_kwargs):
    """`(hand, auto)` `Built`s of one model."""
    return build(build_fn, False), build(build_fn, True, **auto_kwargs)


def _names(value):
    if isinstance(value, (list, tuple)):
        return type(value)(_names(v) for v in value)
    if isinstance(value, (tf.Tensor, tf.compat.v2.Variable)):
        return value.name
    if isinstance(value, tf.Operation):
        return value.name
    return value


def describe(layer_collection, skip_inputs_of=()):
    """Per block: type, kind, approximation, uses, parameter names, the tensors of
    each tower, towers (from the block and from `layer_registrations`).

    The inputs of blocks whose type is in `skip_inputs_of` are left out (a
    batch norm's normalised inputs are rebuilt by the scan: compared by value).
    """
    with layer_collection.graph.as_default():  # variables hash only in a graph
        return _describe(layer_collection, skip_inputs_of)


def _describe(layer_collection, skip_inputs_of):
    described = []
    records = layer_collection.layer_registrations
    for key, block in layer_collection.fisher_blocks.items():
        block_type = type(block).__name__
        inputs = getattr(block, "_tower_inputs", None)
        outputs = getattr(block, "_tower_outputs", None)
        if block_type in skip_inputs_of:
            inputs = None
        record = records[key]
        described.append(
            (
                block_type,
                record.kind,
                record.approximation,
                record.uses,
                _names(key),
                _names(inputs),
                _names(outputs),
                getattr(block, "num_uses", None),
                block.num_registered_towers,
                len(record.towers),
            )
        )
    return described


def one_step_weights(built: Built, feed_values, initial_values=None, **kwargs):
    """The trainable variables after one K-FAC step (cov, inv, then train op).

    `feed_values` maps placeholder names to arrays; `initial_values` maps
    variable names to arrays loaded before the step (default: the
    initializers' values). Returns `(initial values, values after)` by name.
    """
    with built.graph.as_default():
        optimizer = kfac.KfacOptimizer(
            learning_rate=0.05,
            cov_ema_decay=0.95,
            damping=0.01,
            layer_collection=built.layer_collection,
            momentum=0.9,
            estimation_mode="exact",
            **kwargs,
        )
        _, cov_update_op, _, inv_update_op, _, _ = optimizer.make_ops_and_vars()
        train_op = optimizer.minimize(built.loss)
        variables = tf.trainable_variables()
        feed = {built.graph.get_tensor_by_name(k): v for k, v in feed_values.items()}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            if initial_values is not None:
                for var in variables:
                    var.load(initial_values[var.op.name], sess)
            before = {var.op.name: sess.run(var) for var in variables}
            sess.run(cov_update_op, feed)
            sess.run(inv_update_op, feed)
            sess.run(train_op, feed)
            after = {var.op.name: sess.run(var) for var in variables}
    return before, after


def assert_same_step(hand: Built, auto: Built, feed_values, atol=1e-6):
    """One step from the same weights moves both models to the same weights."""
    before, hand_after = one_step_weights(hand, feed_values)
    _, auto_after = one_step_weights(auto, feed_values, initial_values=before)
    assert sorted(hand_after) == sorted(auto_after)
    moved = max(np.max(np.abs(hand_after[k] - before[k])) for k in before)
    assert moved > 1e-4  # the step did something
    for name in hand_after:
        scale = max(1.0, float(np.max(np.abs(hand_after[name]))))
        np.testing.assert_allclose(
            auto_after[name], hand_after[name], rtol=0, atol=atol * scale, err_msg=name
        )
