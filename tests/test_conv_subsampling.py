"""Subsampled statistics of a convolution's input factor (#14): the sampled
estimate against numpy on the very rows drawn, its mean over many draws
against the full factor, the switches' plumbing and their errors."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from test_fisher_factors_conv import _cov_of_rows
from test_fisher_factors_conv import _np_patches
from test_fisher_factors_conv import _with_bias

from kfac.ops import fisher_factors as ff
from kfac.ops import layer_collection as lc
from kfac.ops._config import KfacConfig
from kfac.ops._factors import sampling

X_SHAPE, FILTER = (4, 6, 6, 2), (3, 3, 2, 5)


@pytest.fixture
def drawn(monkeypatch):
    """The index tensors every `sample_indices` call drew (examples or
    patches), in call order."""
    calls = []
    original = sampling.sample_indices

    def recording(total, num_indices):
        indices = original(total, num_indices)
        calls.append(indices)
        return indices

    monkeypatch.setattr(sampling, "sample_indices", recording)
    return calls


def _factor(x, **switches):
    if not isinstance(x, tf.Tensor):
        x = tf.constant(x, tf.float32)
    return ff.ConvInputKroneckerFactor(
        (x,), FILTER, "SAME", strides=(1, 1), has_bias=True, **switches)


def _full_patches(x):
    return _with_bias(_np_patches(x, FILTER[:2], (1, 1), (1, 1), "SAME"))


def test_sample_rows_draws_distinct_rows_and_returns_them(graph, rng):
    rows = rng.randn(20, 3)
    sampled, indices = sampling.sample_rows(tf.constant(rows), 7)
    everything, all_indices = sampling.sample_rows(tf.constant(rows), 50)
    with tf.Session() as sess:
        sampled, indices, everything, all_indices = sess.run(
            [sampled, indices, everything, all_indices])
    assert len(set(indices.tolist())) == 7 and indices.min() >= 0 and indices.max() < 20
    np.testing.assert_array_equal(sampled, rows[indices])
    assert sorted(all_indices.tolist()) == list(range(20))
    np.testing.assert_array_equal(everything, rows[all_indices])


def test_num_sampled_rounds_up_and_keeps_one(graph):
    assert sampling.num_sampled(10, 0.25) == 3
    assert sampling.num_sampled(3, 0.01) == 1
    assert sampling.num_sampled(19, 3.0) == 57
    with tf.Session() as sess:
        assert sess.run(sampling.num_sampled(tf.constant(10), 0.25)) == 3
        assert sess.run(sampling.num_sampled(tf.constant(3), 0.01)) == 1


def test_sampled_patches_give_the_second_moment_of_the_rows_drawn(graph, rng, drawn):
    x = rng.randn(*X_SHAPE)
    factor = _factor(x, sub_sample_patches=True)
    cov = factor._compute_new_cov(0, 0)
    (indices,) = drawn
    # 19 coordinates (3·3·2 and the bias), 3 patches per coordinate.
    assert factor.max_num_patches == 57
    with tf.Session() as sess:
        cov, indices = sess.run([cov, indices])
    rows = _full_patches(x).reshape(-1, 19)
    assert len(set(indices.tolist())) == 57 and len(rows) == 4 * 36
    np.testing.assert_allclose(cov, _cov_of_rows(rows[indices]), rtol=1e-5, atol=1e-6)


def test_sampled_inputs_give_the_factor_of_the_examples_drawn(graph, rng, drawn):
    x = rng.randn(*X_SHAPE)
    ff.set_global_constants(inputs_to_extract_patches_factor=0.6)
    factor = _factor(x, sub_sample_inputs=True)
    cov = factor._compute_new_cov(0, 0)
    (indices,) = drawn
    with tf.Session() as sess:
        cov, indices = sess.run([cov, indices])
    assert len(set(indices.tolist())) == 3  # ceil(0.6 · 4)
    np.testing.assert_allclose(cov, _cov_of_rows(_full_patches(x[indices])),
                               rtol=1e-5, atol=1e-6)


def test_both_switches_sample_examples_then_their_patches(graph, rng, drawn):
    x = rng.randn(*X_SHAPE)
    ff.set_global_constants(max_num_patches_per_dimension=1.0)
    factor = _factor(x, sub_sample_inputs=True, sub_sample_patches=True)
    cov = factor._compute_new_cov(0, 0)
    examples, patches = drawn
    with tf.Session() as sess:
        cov, examples, patches = sess.run([cov, examples, patches])
    rows = _full_patches(x[examples]).reshape(-1, 19)
    assert len(examples) == 2 and len(patches) == 19
    np.testing.assert_allclose(cov, _cov_of_rows(rows[patches]), rtol=1e-5, atol=1e-6)


def test_sampled_estimates_average_to_the_full_factor(graph, rng):
    x = rng.randn(*X_SHAPE)
    tf.set_random_seed(5)
    cov = _factor(x, sub_sample_patches=True)._compute_new_cov(0, 0)
    full = _cov_of_rows(_full_patches(x))
    with tf.Session() as sess:
        draws = [sess.run(cov) for _ in range(400)]
    one_error = np.linalg.norm(draws[0] - full) / np.linalg.norm(full)
    mean_error = np.linalg.norm(np.mean(draws, axis=0) - full) / np.linalg.norm(full)
    # One draw of 57 of 144 patches is off by tens of percent; the mean of
    # 400 (unbiased) by about 1/20 of that.
    assert one_error > 0.05
    assert mean_error < one_error / 5


def test_without_sampling_the_factor_and_its_name_are_unchanged(graph, rng):
    x_value = rng.randn(*X_SHAPE)
    x = tf.constant(x_value, tf.float32)
    plain = _factor(x)
    off = _factor(x, sub_sample_inputs=False, sub_sample_patches=False)
    on = _factor(x, sub_sample_patches=True)
    assert plain._var_scope == off._var_scope
    assert on._var_scope == plain._var_scope + "_subpatches"
    with tf.Session() as sess:
        value = sess.run(plain._compute_new_cov(0, 0))
    np.testing.assert_allclose(value, _cov_of_rows(_full_patches(x_value)),
                               rtol=1e-5, atol=1e-6)


def test_config_defaults_come_from_the_module_constants_and_are_checked():
    ff.set_global_constants(sub_sample_patches=True, max_num_patches_per_dimension=2.0)
    config = KfacConfig.from_defaults()
    assert config.sub_sample_patches and not config.sub_sample_inputs
    assert config.max_num_patches_per_dimension == 2.0
    for fraction in (0.0, 1.5, True):
        with pytest.raises(ValueError, match="inputs_to_extract_patches_factor"):
            KfacConfig(inputs_to_extract_patches_factor=fraction)
    with pytest.raises(ValueError, match="max_num_patches_per_dimension"):
        KfacConfig(max_num_patches_per_dimension=-1.0)


def _register(collection, approx=None, **switches):
    x = tf.placeholder(tf.float32, [None, 6, 6, 2])
    with tf.variable_scope(None, default_name="layer"):
        kernel = tf.get_variable("kernel", FILTER)
    y = tf.nn.conv2d(x, kernel, [1, 1, 1, 1], "SAME")
    collection.register_conv2d(kernel, [1, 1, 1, 1], "SAME", x, y, approx=approx,
                               **switches)
    block = list(collection.get_blocks())[-1]
    block.instantiate_factors(((y,),), 0.1)
    return block


def test_registration_switches_reach_the_input_factor(graph):
    collection = lc.LayerCollection(config=KfacConfig(sub_sample_inputs=True))
    default = _register(collection)
    patches_only = _register(collection, sub_sample_inputs=False,
                             sub_sample_patches=True)
    ekfac = _register(collection, approx="ekfac", sub_sample_patches=True)
    assert (default._input_factor._sub_sample_inputs,
            default._input_factor._sub_sample_patches) == (True, False)
    assert (patches_only._input_factor._sub_sample_inputs,
            patches_only._input_factor._sub_sample_patches) == (False, True)
    assert ekfac._input_factor._sub_sample_patches


def test_blocks_on_one_layer_share_the_factor_when_the_switches_resolve_alike(graph):
    from kfac.ops import fisher_blocks as fb

    collection = lc.LayerCollection()
    x = tf.placeholder(tf.float32, [None, 6, 6, 2])
    kernel = tf.get_variable("kernel", FILTER)
    y = tf.nn.conv2d(x, kernel, [1, 1, 1, 1], "SAME")
    blocks = []
    for switch in (None, False, True):
        block = fb.ConvKFCBasicFB(collection.factor_cache, kernel, "SAME",
                                  strides=[1, 1, 1, 1],
                                  extract_patches_fn="extract_image_patches",
                                  sub_sample_patches=switch)
        block.register_additional_tower(x, y)
        block.instantiate_factors(((y,),), 0.1)
        blocks.append(block)
    assert blocks[0]._input_factor is blocks[1]._input_factor
    assert blocks[2]._input_factor is not blocks[0]._input_factor
    assert blocks[0]._output_factor is blocks[2]._output_factor


def test_registration_rejects_bad_switches(graph):
    collection = lc.LayerCollection()
    with pytest.raises(ValueError, match="sub_sample_patches=True needs a Kronecker"):
        _register(collection, approx="diagonal", sub_sample_patches=True)
    with pytest.raises(ValueError, match="sub_sample_inputs must be None or a bool"):
        _register(collection, sub_sample_inputs="yes")
    x = tf.placeholder(tf.float32, [None, 6, 2])
    kernel = tf.get_variable("kernel1d", (3, 2, 4))
    y = tf.nn.convolution(x, kernel, "SAME")
    with pytest.raises(ValueError, match="sub_sample_patches must be None or a bool"):
        collection.register_convolution(kernel, x, y, "SAME", sub_sample_patches=1)


def test_sampled_patches_are_gathered_without_the_full_patch_matrix(graph, rng):
    # 8 images of 12x12x3, 5x5 filter: 1,152 patches of 75 entries; 76·3 = 228
    # are drawn. No tensor of the update may hold all patches.
    x = tf.constant(rng.randn(8, 12, 12, 3), tf.float32)
    factor = ff.ConvInputKroneckerFactor((x,), (5, 5, 3, 4), "SAME", strides=(1, 1),
                                         has_bias=True, sub_sample_patches=True)
    before = set(graph.get_operations())
    cov = factor._compute_new_cov(0, 0)
    sizes = [tensor.shape.num_elements() or 0
             for op in graph.get_operations() if op not in before
             for tensor in op.outputs]
    assert max(sizes) < 1152 * 75 / 4
    assert "GatherNd" in {op.type for op in graph.get_operations()}
    assert cov.shape.as_list() == [76, 76]


@pytest.mark.parametrize("strides, rates, padding, channels", [
    ((1, 1, 1, 1), (1, 1, 1, 1), "SAME", 1),
    ((1, 2, 1, 1), (1, 1, 1, 1), "VALID", 3),
    ((1, 1, 1, 1), (1, 2, 2, 1), "SAME", 2),
    ((1, 2, 2, 1), (1, 1, 1, 1), "SAME", 7),
])
def test_image_patches_have_the_values_of_tensorflows_op(graph, rng, strides, rates,
                                                         padding, channels):
    # The original's `extract_image_patches` patches, computed faster.
    from kfac.ops._factors import conv as conv_factors

    x = tf.constant(rng.randn(3, 9, 8, channels), tf.float32)
    ours = conv_factors._extract_image_patches(x, (3, 2, channels, 4), strides, rates,
                                               padding)
    theirs = tf.image.extract_patches(x, [1, 3, 2, 1], list(strides), list(rates),
                                      padding)
    assert ours.shape.as_list() == theirs.shape.as_list()
    with tf.Session() as sess:
        ours, theirs = sess.run([ours, theirs])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * np.abs(theirs).max())


@pytest.mark.parametrize("sampled", [False, True])
def test_image_patches_of_inputs_not_4d_raise_naming_them(graph, rng, sampled):
    # One check serves extraction and the sampled gather alike.
    x = tf.constant(rng.randn(4, 6, 2), tf.float32)
    factor = ff.ConvInputKroneckerFactor(
        (x,), (3, 2, 4), "SAME", strides=(1, 1, 1, 1),
        extract_patches_fn="extract_image_patches", sub_sample_patches=sampled)
    with pytest.raises(ValueError, match="extract_image_patches needs 4-D inputs"):
        factor.patch_rows(x)
