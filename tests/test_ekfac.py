"""EKFAC (George et al. 2018): the eigenvalue factors, the blocks and a full step,
against numpy re-computations (float64)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import kfac
from kfac.ops import fisher_blocks
from kfac.ops import fisher_factors

B, IN, OUT = 7, 4, 3
TIGHT = dict(rtol=1e-10, atol=1e-12)


def _with_ones(rows):
    return np.concatenate([rows, np.ones([rows.shape[0], 1])], axis=1)


def _make_variables(layer_collection):
    factors = list(layer_collection.get_factors())
    for factor in factors:
        factor.instantiate_cov_variables()
    for factor in factors:
        factor.instantiate_inv_variables()


def _refresh_ops(block):
    """(Kronecker covariance updates, eigenbasis updates, scaling update), all with
    no moving average (decay 0)."""
    kronecker = [block._input_factor.make_covariance_update_op(0.0),
                 block._output_factor.make_covariance_update_op(0.0)]
    bases = (block._input_factor.make_inverse_update_ops()
             + block._output_factor.make_inverse_update_ops())
    scaling = block._eigenvalue_factor.make_covariance_update_op(0.0)
    return kronecker, bases, scaling


def _dense_block(inputs, grads, has_bias=True, damping=0.1):
    layer_collection = kfac.LayerCollection()
    block = fisher_blocks.FullyConnectedEKFACFB(layer_collection, has_bias=has_bias)
    block.register_additional_tower(inputs, tf.zeros_like(grads))
    block.instantiate_factors(((grads,),), damping)
    block.register_inverse()
    _make_variables(layer_collection)
    return block


def _run_refresh(sess, block, feed_dict=None):
    """Runs the three phases; returns (U_A, U_G, s)."""
    kronecker, bases, scaling = _refresh_ops(block)
    sess.run(tf.global_variables_initializer(), feed_dict=feed_dict)
    sess.run(kronecker, feed_dict=feed_dict)
    sess.run(bases, feed_dict=feed_dict)
    sess.run(scaling, feed_dict=feed_dict)
    return sess.run([block._input_factor.eigenbasis, block._output_factor.eigenbasis,
                     block._eigenvalue_factor.get_cov_var()], feed_dict=feed_dict)


def _assert_eigenbasis_of(basis, matrix):
    """`basis` is orthonormal and diagonalises `matrix`."""
    np.testing.assert_allclose(basis.T @ basis, np.eye(len(basis)), atol=1e-10)
    projected = basis.T @ matrix @ basis
    off_diagonal = projected - np.diag(np.diag(projected))
    assert np.max(np.abs(off_diagonal)) < 1e-10 * np.max(np.abs(matrix))


def _scaling_reference(per_example_grads, input_basis, output_basis):
    """`(1/B) Σ_b (U_Aᵀ G_b U_G)²` from per-example gradients `[B, in, out]`."""
    projected = np.einsum("ia,bij,jc->bac", input_basis, per_example_grads,
                          output_basis)
    return np.mean(projected**2, axis=0)


def test_dense_scaling_equals_projected_per_example_second_moments(rng):
    x = rng.randn(B, IN)
    g = rng.randn(B, OUT)
    with tf.Graph().as_default(), tf.Session() as sess:
        block = _dense_block(tf.constant(x), tf.constant(g))
        input_basis, output_basis, scaling = _run_refresh(sess, block)
    rows = _with_ones(x)
    _assert_eigenbasis_of(input_basis, rows.T @ rows / B)
    _assert_eigenbasis_of(output_basis, g.T @ g / B)
    per_example = np.einsum("bi,bj->bij", rows, g)
    np.testing.assert_allclose(
        scaling, _scaling_reference(per_example, input_basis, output_basis), **TIGHT)


def test_dense_scaling_of_three_dimensional_inputs_counts_every_position(rng):
    x = rng.randn(B, 2, IN)
    g = rng.randn(B, 2, OUT)
    with tf.Graph().as_default(), tf.Session() as sess:
        block = _dense_block(tf.constant(x), tf.constant(g), has_bias=False)
        input_basis, output_basis, scaling = _run_refresh(sess, block)
    rows, grads = x.reshape(-1, IN), g.reshape(-1, OUT)
    per_example = np.einsum("bi,bj->bij", rows, grads)
    np.testing.assert_allclose(
        scaling, _scaling_reference(per_example, input_basis, output_basis), **TIGHT)


def test_one_example_equals_exact_fisher_restricted_to_the_basis(rng):
    x = rng.randn(1, IN)
    g = rng.randn(1, OUT)
    with tf.Graph().as_default(), tf.Session() as sess:
        block = _dense_block(tf.constant(x), tf.constant(g))
        input_basis, output_basis, _ = _run_refresh(sess, block)
        fisher_block = sess.run(block.full_fisher_block())
    gradient = np.outer(_with_ones(x)[0], g[0]).reshape(-1)  # row-major vec
    exact = np.outer(gradient, gradient)
    basis = np.kron(input_basis, output_basis)
    restricted = basis @ np.diag(np.diag(basis.T @ exact @ basis)) @ basis.T
    np.testing.assert_allclose(fisher_block, restricted, rtol=1e-10,
                               atol=1e-12 * np.max(np.abs(exact)))


def test_dense_products_are_the_damped_powers_of_the_full_block(rng):
    x, g = rng.randn(B, IN), rng.randn(B, OUT)
    weights, bias = rng.randn(IN, OUT), rng.randn(OUT)
    damping = 0.3
    with tf.Graph().as_default(), tf.Session() as sess:
        block = _dense_block(tf.constant(x), tf.constant(g), damping=damping)
        _run_refresh(sess, block)
        vector = (tf.constant(weights), tf.constant(bias))
        fisher_block, inverse, product = sess.run([
            block.full_fisher_block(), block.multiply_inverse(vector),
            block.multiply(vector)])
    flat = np.concatenate([weights, bias[None]], axis=0).reshape(-1)
    damped = fisher_block + damping * np.eye(len(flat))
    for actual, expected in ((inverse, np.linalg.solve(damped, flat)),
                             (product, damped @ flat)):
        mat2d = np.concatenate([actual[0], actual[1][None]], axis=0).reshape(-1)
        np.testing.assert_allclose(mat2d, expected, rtol=1e-9,
                                   atol=1e-11 * np.max(np.abs(expected)))


def _conv_per_example_grads(x, g, kernel, stride):
    """`G_b = Σ_loc [patch, 1] g_locᵀ` for VALID padding, `[B, k·k·cin + 1, cout]`."""
    batch, _, _, in_channels = x.shape
    _, rows, cols, out_channels = g.shape
    grads = np.zeros([batch, kernel * kernel * in_channels + 1, out_channels])
    for b in range(batch):
        for i in range(rows):
            for j in range(cols):
                patch = x[b, i * stride:i * stride + kernel,
                          j * stride:j * stride + kernel, :].reshape(-1)
                grads[b] += np.outer(np.append(patch, 1.0), g[b, i, j])
    return grads


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_scaling_equals_projected_per_example_second_moments(rng, stride):
    kernel, in_channels, out_channels, size = 3, 2, 3, 6
    out_size = (size - kernel) // stride + 1
    x = rng.randn(B, size, size, in_channels)
    g = rng.randn(B, out_size, out_size, out_channels)
    with tf.Graph().as_default(), tf.Session() as sess:
        layer_collection = kfac.LayerCollection()
        params = (tf.zeros([kernel, kernel, in_channels, out_channels], tf.float64),
                  tf.zeros([out_channels], tf.float64))
        block = fisher_blocks.ConvEKFACFB(
            layer_collection, params, "VALID", strides=[1, stride, stride, 1],
            extract_patches_fn="extract_image_patches")
        block.register_additional_tower(tf.constant(x), tf.zeros_like(g))
        block.instantiate_factors(((tf.constant(g),),), 0.1)
        block.register_inverse()
        _make_variables(layer_collection)
        input_basis, output_basis, scaling = _run_refresh(sess, block)
    per_example = _conv_per_example_grads(x, g, kernel, stride)
    patches = np.concatenate([
        _with_ones(x[:, i * stride:i * stride + kernel,
                     j * stride:j * stride + kernel, :].reshape(B, -1))
        for i in range(out_size) for j in range(out_size)], axis=0)
    _assert_eigenbasis_of(input_basis, patches.T @ patches / len(patches))
    np.testing.assert_allclose(
        scaling, _scaling_reference(per_example, input_basis, output_basis), **TIGHT)


LR, DAMPING = 0.25, 0.0625  # exact in float32 (the optimizer keeps its damping so)


class _SoftmaxRegression(object):
    """One EKFAC dense layer (weights + bias) under a softmax, float64."""

    def __init__(self, rng, **optimizer_kwargs):
        self.x_value = rng.randn(B, IN)
        self.labels_value = rng.randint(0, OUT, B)
        self.w_value, self.b_value = rng.randn(IN, OUT) * 0.5, rng.randn(OUT) * 0.1
        x = tf.constant(self.x_value)
        labels = tf.constant(self.labels_value)
        self.w = tf.get_variable("w", initializer=tf.constant(self.w_value))
        self.b = tf.get_variable("b", initializer=tf.constant(self.b_value))
        logits = tf.matmul(x, self.w) + self.b
        self.layer_collection = kfac.LayerCollection()
        self.layer_collection.register_fully_connected(
            (self.w, self.b), x, logits, approx="ekfac")
        self.layer_collection.register_categorical_predictive_distribution(
            logits, targets=labels)
        self.loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits))
        kwargs = dict(learning_rate=LR, cov_ema_decay=0.0, damping=DAMPING,
                      layer_collection=self.layer_collection, momentum=0.0,
                      estimation_mode="empirical")
        kwargs.update(optimizer_kwargs)
        self.optimizer = kfac.KfacOptimizer(**kwargs)
        self.train_op = self.optimizer.minimize(self.loss, var_list=[self.w, self.b])

    def numpy_step(self):
        """The EKFAC step from independent numpy eigendecompositions."""
        logits = self.x_value @ self.w_value + self.b_value
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        grads = probs - np.eye(OUT)[self.labels_value]  # per-example, summed loss
        rows = _with_ones(self.x_value)
        input_basis = np.linalg.eigh(rows.T @ rows / B)[1]
        output_basis = np.linalg.eigh(grads.T @ grads / B)[1]
        scaling = np.mean(np.einsum("bi,bj->bij", (rows @ input_basis)**2,
                                    (grads @ output_basis)**2), axis=0)
        gradient = rows.T @ grads / B  # of the mean loss, mat2d
        projected = input_basis.T @ gradient @ output_basis
        step = input_basis @ (projected / (scaling + DAMPING)) @ output_basis.T
        new = np.concatenate([self.w_value, self.b_value[None]]) - LR * step
        return new[:-1], new[-1]


def test_full_step_equals_numpy_ekfac_step(rng, tf_behavior):
    with tf.Graph().as_default():
        model = _SoftmaxRegression(rng)
        weights, bias = _first_step(model)
    expected_weights, expected_bias = model.numpy_step()
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bias, expected_bias, rtol=1e-9, atol=1e-12)


def _first_step(model):
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        # Factors, then their eigenbases, then the scaling in those bases.
        sess.run(model.optimizer.cov_update_op)
        sess.run(model.optimizer.inv_update_op)
        sess.run(model.optimizer.cov_update_op)
        sess.run(model.train_op)
        return sess.run([model.w, model.b])


def _ekfac_state(model):
    block = model.layer_collection.fisher_blocks[(model.w, model.b)]
    return [block._input_factor.eigenbasis, block._output_factor.eigenbasis,
            block._eigenvalue_factor.get_cov_var()]


def test_checkpoint_restores_bases_and_scaling_bit_exactly(rng, tmp_path):
    path = str(tmp_path / "model.ckpt")
    with tf.Graph().as_default():
        model = _SoftmaxRegression(rng, cov_ema_decay=0.9)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(3):
                sess.run([model.train_op, model.optimizer.cov_update_op])
                sess.run(model.optimizer.inv_update_op)
            saved = sess.run(_ekfac_state(model))
            tf.train.Saver().save(sess, path)
    with tf.Graph().as_default():
        model = _SoftmaxRegression(np.random.RandomState(1), cov_ema_decay=0.9)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            fresh = sess.run(_ekfac_state(model))
            tf.train.Saver().restore(sess, path)
            restored = sess.run(_ekfac_state(model))
    for before, initial, after in zip(saved, fresh, restored):
        assert not np.array_equal(before, initial)
        assert np.array_equal(before, after)


def test_non_finite_statistics_leave_the_bases_and_scaling_unchanged(rng):
    x_value, g_value = rng.randn(B, IN), rng.randn(B, OUT)
    with tf.Graph().as_default(), tf.Session() as sess:
        x = tf.placeholder(tf.float64, [B, IN])
        block = _dense_block(x, tf.constant(g_value))
        _run_refresh(sess, block, feed_dict={x: x_value})
        eigenvalue_factor = block._eigenvalue_factor
        state = [block._input_factor.eigenbasis, eigenvalue_factor.get_cov_var()]
        before = sess.run(state)
        bad_inputs = x_value.copy()
        bad_inputs[2, 1] = np.nan
        sess.run(eigenvalue_factor.make_covariance_update_op(0.5),
                 feed_dict={x: bad_inputs})
        assert sess.run(eigenvalue_factor.num_skipped_updates) == 1
        # A non-finite covariance (e.g. restored from outside) is not decomposed.
        input_cov = block._input_factor.get_cov_var()
        infinity = tf.constant(np.inf, tf.float64)
        sess.run(input_cov.assign(tf.fill(input_cov.shape, infinity)))
        sess.run(block._input_factor.make_inverse_update_ops())
        assert sess.run(block._input_factor.num_skipped_updates) == 1
        after = sess.run(state)
    for value_before, value_after in zip(before, after):
        assert np.array_equal(value_before, value_after)


def test_registration_selects_ekfac_blocks_and_names_it_in_errors(graph):
    layer_collection = kfac.LayerCollection()
    x = tf.zeros([B, 5, 5, 2])
    kernel = tf.get_variable("kernel", [3, 3, 2, 4])
    conv = tf.nn.conv2d(x, kernel, [1, 1, 1, 1], "SAME")
    layer_collection.register_conv2d(kernel, [1, 1, 1, 1], "SAME", x, conv,
                                     approx="ekfac")
    weights = tf.get_variable("weights", [100, 3])
    flat = tf.reshape(conv, [B, 100])
    layer_collection.set_default_fully_connected_approximation("ekfac")
    layer_collection.register_fully_connected(weights, flat, tf.matmul(flat, weights))
    assert isinstance(layer_collection.fisher_blocks[kernel], fisher_blocks.ConvEKFACFB)
    assert isinstance(layer_collection.fisher_blocks[weights],
                      fisher_blocks.FullyConnectedEKFACFB)
    with pytest.raises(ValueError, match="ekfac"):
        layer_collection.register_fully_connected(
            tf.get_variable("other", [100, 3]), flat, flat[:, :3], approx="ekfca")
    assert issubclass(fisher_factors.ConvEigenbasisFactor,
                      fisher_factors.DiagonalFactor)


def test_health_summaries_report_the_scaling(rng, graph):
    model = _SoftmaxRegression(rng)
    scalars = kfac.summaries.curvature_health(model.optimizer)
    prefix = "kfac/{}/".format(model.w.op.name)
    assert prefix + "pi" not in scalars
    # The scaling is read as it is, never as a dense [n, n] diagonal matrix.
    num_params = (IN + 1) * OUT
    assert not [op.name for op in tf.get_default_graph().get_operations()
                if op.name.startswith("kfac_health") and any(
                    output.shape.as_list()[:1] == [num_params]
                    for output in op.outputs if output.shape.rank == 2)]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        trace = sess.run(scalars[prefix + "eigenvalue_factor/trace"])
        sess.run(model.optimizer.cov_update_op)
        values, scaling = sess.run([scalars, _ekfac_state(model)[2]])
    assert trace == (IN + 1) * OUT  # the scaling starts at ones
    np.testing.assert_allclose(values[prefix + "eigenvalue_factor/trace"],
                               np.sum(scaling), rtol=1e-6)
    assert values[prefix + "eigenvalue_factor/damping"] == pytest.approx(DAMPING)
    assert all(np.isfinite(value) for value in values.values())


def test_example_specs_choose_ekfac_as_the_collection_default():
    from kfac.examples import comparison_training

    spec = comparison_training.OptimizerSpec("kfac", 0.01, approximation="ekfac")
    layer_collection = comparison_training.layer_collection_for(spec)
    assert layer_collection.default_fully_connected_approximation == "ekfac"
    assert layer_collection.default_conv2d_approximation == "ekfac"
    default = comparison_training.OptimizerSpec("kfac", 0.01)
    assert (comparison_training.layer_collection_for(default)
            .default_fully_connected_approximation == "kron")
