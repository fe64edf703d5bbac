"""Tests of the multi-use, series (temporal) and embedding blocks.

Multi-use "independent" blocks are `n·kron(A, G)` with statistics averaged over
uses and batch. The series blocks are checked against independent dense
formulas of Martens, Ba & Grosse (2018): option 1 against the inverse of
`Σ_{t,s} W Ψ^{|t−s|} W`, option 2 against the inverse spectral density at zero
of the AR(1) process, `(1/T)(I − Φ)ᵀ (V₀ − Φ V₀ Φᵀ)⁻¹ (I − Φ)`, `Φ = V₁ V₀⁻¹`.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from test_fisher_blocks_support import FakeLayerCollection
from test_fisher_blocks_support import build_block_updates
from test_fisher_blocks_support import conv_patches
from test_fisher_blocks_support import kron_damped
from test_fisher_blocks_support import pi_tracenorm
from test_fisher_blocks_support import run_updates
from test_fisher_blocks_support import second_moment
from test_fisher_blocks_support import solve_dense
from test_fisher_blocks_support import with_ones

from kfac.ops import fisher_blocks as fb
from kfac.ops import fisher_factors as ff

NUM_USES = 3


def _register_uses(block, inputs, grads, folded):
    """One tower; lists over uses, or folded `[num_uses·B, ...]` tensors."""
    if folded:
        inputs, grads = [tf.constant(np.concatenate(inputs))], [np.concatenate(grads)]
        block.register_additional_tower(inputs[0], tf.zeros(grads[0].shape, tf.float64))
        return ((tf.constant(grads[0]),),)
    input_tensors = [tf.constant(x) for x in inputs]
    block.register_additional_tower(
        input_tensors, [tf.zeros(g.shape, tf.float64) for g in grads]
    )
    return (([tf.constant(g) for g in grads],),)


def _time_series(rng, batch, size):
    """Time-correlated steps (persistent part + noise), so lag-1 moments are PSD."""
    base = rng.randn(batch, size)
    return [base + 0.3 * rng.randn(batch, size) for _ in range(NUM_USES)]


def _lagged_moments(steps, has_bias=False):
    """`C₀ = (1/N) Σ ã ãᵀ`, `C₁ = (1/N) Σ_t ã_{t+1} ã_tᵀ` over use-major rows."""
    batch = steps[0].shape[0]
    rows = np.concatenate(steps)
    rows = with_ones(rows) if has_bias else rows
    return (rows.T @ rows / len(rows), rows[batch:].T @ rows[:-batch] / len(rows))


# ----------------------------------------------------------------------------
# Independent multi-use blocks


@pytest.mark.parametrize("folded", [False, True])
def test_fully_connected_multi_indep_matches_dense(graph, rng, folded):
    inputs, grads = _time_series(rng, 4, 2), _time_series(rng, 4, 3)
    block = fb.FullyConnectedMultiIndepFB(
        FakeLayerCollection(), has_bias=True, num_uses=NUM_USES if folded else None
    )
    grads_list = _register_uses(block, inputs, grads, folded)
    cov_ops, inv_ops = build_block_updates(block, grads_list, 0.3)
    assert block._num_uses == NUM_USES and block._renorm_coeff == 3.0
    input_cov = second_moment(with_ones(np.concatenate(inputs)))
    output_cov = second_moment(np.concatenate(grads))
    damped = kron_damped(input_cov, output_cov, 0.3, NUM_USES, NUM_USES)
    weights, bias = rng.randn(2, 3), rng.randn(3)
    mat2d = np.concatenate([weights, bias[None]])
    vector = (tf.constant(weights), tf.constant(bias))
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        covs = sess.run((block._input_factor.get_cov(), block._output_factor.get_cov()))
        inverse = sess.run(block.multiply_inverse(vector))
    np.testing.assert_allclose(covs[0], input_cov, rtol=1e-10)
    np.testing.assert_allclose(covs[1], output_cov, rtol=1e-10)
    np.testing.assert_allclose(
        np.concatenate([inverse[0], inverse[1][None]]),
        solve_dense(damped, mat2d),
        rtol=1e-10,
    )


@pytest.mark.parametrize("folded", [False, True])
def test_conv_multi_indep_matches_dense(graph, rng, folded):
    inputs = [rng.randn(2, 3, 3, 2) for _ in range(NUM_USES)]
    grads = [rng.randn(2, 2, 2, 2) for _ in range(NUM_USES)]
    block = fb.ConvKFCBasicMultiIndepFB(
        FakeLayerCollection(),
        tf.zeros([2, 2, 2, 2], tf.float64),
        "VALID",
        strides=[1, 1, 1, 1],
        extract_patches_fn="extract_image_patches",
        num_uses=NUM_USES if folded else None,
    )
    grads_list = _register_uses(block, inputs, grads, folded)
    cov_ops, inv_ops = build_block_updates(block, grads_list, 0.3)
    patches = np.concatenate([conv_patches(x, (2, 2)) for x in inputs])
    input_cov = second_moment(patches.reshape(-1, 8))
    output_cov = second_moment(np.concatenate(grads).reshape(-1, 2))
    scale = 9 * NUM_USES  # locations · uses
    assert block._renorm_coeff == scale
    damped = kron_damped(input_cov, output_cov, 0.3, scale, scale)
    vector = rng.randn(2, 2, 2, 2)
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        inverse = sess.run(block.multiply_inverse(tf.constant(vector)))
    np.testing.assert_allclose(
        inverse.reshape(-1, 2), solve_dense(damped, vector.reshape(-1, 2)), rtol=1e-10
    )


def test_multi_use_process_data_formats(graph, monkeypatch):
    towers = [
        [tf.ones([2, 3]) * (i + 1) for i in range(2)],
        [tf.ones([1, 3]) * (i + 3) for i in range(2)],
    ]
    grads = tuple([tf.ones([len_, 4]) for _ in range(2)] for len_ in (2, 1))

    def make_block():
        # The strategy is read when the block is made (its configuration).
        block = fb.FullyConnectedMultiIndepFB(FakeLayerCollection())
        for tower in towers:
            block.register_additional_tower(tower, [tf.ones([1])] * 2)
        return block

    block = make_block()
    inputs, grads_list = block._process_data((grads,))
    # concat: use-major, tower-minor.
    assert inputs[0].tensors == [towers[0][0], towers[1][0], towers[0][1], towers[1][1]]
    assert grads_list[0][0].tensors == [
        grads[0][0],
        grads[1][0],
        grads[0][1],
        grads[1][1],
    ]
    assert block._num_uses == 2
    monkeypatch.setattr(ff, "TOWER_STRATEGY", "separate")
    inputs, grads_list = make_block()._process_data((grads,))
    assert [p.tensors for p in inputs] == towers
    assert [p.tensors for p in grads_list[0]] == [list(g) for g in grads]
    hash((inputs, grads_list))
    # Folded format: passed through as (hashable) tuples.
    folded = fb.FullyConnectedMultiIndepFB(FakeLayerCollection(), num_uses=2)
    folded_inputs, folded_grads = [tf.ones([4, 3])], [tf.ones([4, 2])]
    folded.register_additional_tower(folded_inputs[0], tf.ones([4, 2]))
    inputs, grads_list = folded._process_data(((folded_grads[0],),))
    assert inputs == (folded_inputs[0],) and grads_list == ((folded_grads[0],),)
    hash((inputs, grads_list))


def test_multi_use_errors(graph, monkeypatch):
    def block_with(inputs_per_tower, num_uses=None):
        block = fb.FullyConnectedMultiIndepFB(FakeLayerCollection(), num_uses=num_uses)
        for inputs in inputs_per_tower:
            block.register_additional_tower(inputs, inputs)
        return block

    three_uses = [tf.ones([2, 2])] * 3
    with pytest.raises(ValueError, match="num_uses"):
        block_with([three_uses], num_uses=2)._process_data(((three_uses,),))
    with pytest.raises(ValueError, match="differs between towers"):
        block_with([three_uses, three_uses[:2]])._process_data(
            ((three_uses, three_uses),)
        )
    with pytest.raises(ValueError, match="outputs"):
        block_with([three_uses])._process_data(((three_uses[:2],),))
    folded = tf.ones([6, 2])
    with pytest.raises(ValueError, match="num_uses must be given"):
        block_with([folded])._process_data(((folded,),))
    with pytest.raises(ValueError, match="positive integer"):
        fb.FullyConnectedMultiIndepFB(FakeLayerCollection(), num_uses=0)
    monkeypatch.setattr(ff, "TOWER_STRATEGY", "bogus")
    with pytest.raises(ValueError, match="TOWER_STRATEGY"):
        block_with([three_uses])._process_data(((three_uses,),))


# ----------------------------------------------------------------------------
# Series blocks


def _sqrtm(matrix):
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return eigenvectors @ np.diag(np.sqrt(eigenvalues)) @ eigenvectors.T


def _series_reference(option, inputs, grads, damping):
    """Dense `F̂⁻¹` of the series block (module docstring), from numpy statistics."""
    input_c0, input_c1 = _lagged_moments(inputs, has_bias=True)
    output_c0, output_c1 = _lagged_moments(grads)
    scaled = damping / NUM_USES
    pi = pi_tracenorm(input_c0, output_c0)
    input_c0 = input_c0 + pi * np.sqrt(scaled) * np.eye(len(input_c0))
    output_c0 = output_c0 + np.sqrt(scaled) / pi * np.eye(len(output_c0))
    v0 = np.kron(input_c0, output_c0)
    if option == 1:
        whiten = np.kron(_sqrtm(input_c0), _sqrtm(output_c0))
        v1 = np.kron((input_c1 + input_c1.T) / 2, (output_c1 + output_c1.T) / 2)
        psi = np.linalg.solve(whiten, np.linalg.solve(whiten, v1).T).T
        assert np.all(np.linalg.eigvalsh(psi) > 0)  # PSD Ψ: |eigenvalues| is a no-op
        fisher = sum(
            whiten @ np.linalg.matrix_power(psi, abs(t - s)) @ whiten
            for t in range(NUM_USES)
            for s in range(NUM_USES)
        )
        return np.linalg.inv(fisher)
    v1 = np.kron(input_c1, output_c1)
    for c0, c1 in ((input_c0, input_c1), (output_c0, output_c1)):
        inv_sqrt = np.linalg.inv(_sqrtm(c0))
        assert np.linalg.norm(inv_sqrt @ c1 @ inv_sqrt, 2) < 1  # μ = σ² not clipped
    phi = v1 @ np.linalg.inv(v0)
    eye = np.eye(len(v0))
    return (eye - phi).T @ np.linalg.inv(v0 - phi @ v0 @ phi.T) @ (eye - phi) / NUM_USES


@pytest.mark.parametrize(
    "option", [fb.SeriesFBApproximation.option1, fb.SeriesFBApproximation.option2]
)
def test_fully_connected_series_matches_dense_formula(graph, rng, option, tf_behavior):
    inputs, grads = _time_series(rng, 4, 2), _time_series(rng, 4, 2)
    block = fb.FullyConnectedSeriesFB(
        FakeLayerCollection(), has_bias=True, option=option
    )
    grads_list = _register_uses(block, inputs, grads, folded=False)
    cov_ops, inv_ops = build_block_updates(block, grads_list, 0.05)
    assert block._num_timesteps == NUM_USES
    weights, bias = rng.randn(2, 2), rng.randn(2)
    mat2d = np.concatenate([weights, bias[None]])
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        inverse = sess.run(
            block.multiply_inverse((tf.constant(weights), tf.constant(bias)))
        )
    expected = _series_reference(int(option), inputs, grads, 0.05) @ mat2d.reshape(-1)
    np.testing.assert_allclose(
        np.concatenate([inverse[0], inverse[1][None]]).reshape(-1), expected, rtol=1e-8
    )
    assert inverse[0].shape == (2, 2) and inverse[1].shape == (2,)


def test_fully_connected_series_errors(graph, rng):
    inputs, grads = _time_series(rng, 2, 2), _time_series(rng, 2, 2)
    block = fb.FullyConnectedSeriesFB(FakeLayerCollection())
    grads_list = _register_uses(block, inputs, grads, folded=False)
    block.instantiate_factors(grads_list, 0.1)
    with pytest.raises(NotImplementedError, match="inverse"):
        block.register_matpower(2)
    with pytest.raises(NotImplementedError, match="inverse"):
        block.multiply(tf.ones([2, 2], tf.float64))
    with pytest.raises(AssertionError):
        block._renorm_coeff  # noqa: B018
    bad_option = fb.FullyConnectedSeriesFB(FakeLayerCollection(), option=3)
    _register_uses(bad_option, inputs, grads, folded=False)
    bad_option.instantiate_factors(grads_list, 0.1)
    with pytest.raises(ValueError, match="option"):
        bad_option.register_inverse()


# ----------------------------------------------------------------------------
# Embedding blocks


def _dense_rows(indices, values, vocab_size):
    dense = np.zeros((vocab_size, values.shape[1]))
    np.add.at(dense, indices, values)
    return dense


@pytest.mark.parametrize("multi", [False, True])
def test_embedding_sparse_gradient_matches_dense(graph, rng, multi, tf_behavior):
    # float32: the embedding input factor is float32 (its args carry no dtype).
    vocab_size, ids = 6, [np.array([0, 2, 2, 5]), np.array([2, 3, 0, 0])]
    grads = [rng.randn(4, 2), rng.randn(4, 2)]
    if multi:
        block = fb.EmbeddingKFACMultiIndepFB(FakeLayerCollection(), vocab_size)
        block.register_additional_tower(
            [tf.constant(i) for i in ids], [tf.zeros([4, 2], tf.float32)] * 2
        )
        grads_list = (([tf.constant(g, tf.float32) for g in grads],),)
        all_ids, all_grads, num_uses = np.concatenate(ids), np.concatenate(grads), 2
    else:
        block = fb.EmbeddingKFACFB(FakeLayerCollection(), vocab_size)
        block.register_additional_tower(
            tf.constant(ids[0]), tf.zeros([4, 2], tf.float32)
        )
        grads_list = ((tf.constant(grads[0], tf.float32),),)
        all_ids, all_grads, num_uses = ids[0], grads[0], 1
    cov_ops, inv_ops = build_block_updates(block, grads_list, 0.2)
    input_diag = np.bincount(all_ids, minlength=vocab_size) / len(all_ids)
    damped = kron_damped(
        np.diag(input_diag), second_moment(all_grads), 0.2, num_uses, num_uses
    )
    indices, values = np.array([2, 0, 2]), rng.randn(3, 2)
    sparse = tf.IndexedSlices(
        tf.constant(values, tf.float32),
        tf.constant(indices),
        tf.constant([vocab_size, 2]),
    )
    dense_vector = rng.randn(vocab_size, 2)
    sparse_inverse = block.multiply_inverse(sparse)
    sparse_product = block.multiply(sparse)
    assert isinstance(sparse_inverse, tf.IndexedSlices)
    with tf.Session() as sess:
        run_updates(sess, cov_ops, inv_ops)
        inverse_values, inverse_indices, product_values = sess.run(
            (sparse_inverse.values, sparse_inverse.indices, sparse_product.values)
        )
        dense_inverse = sess.run(
            block.multiply_inverse(tf.constant(dense_vector, tf.float32))
        )
    # Only the gathered rows are computed.
    assert inverse_values.shape == (3, 2)
    np.testing.assert_array_equal(inverse_indices, indices)
    dense_gradient = _dense_rows(indices, values, vocab_size)
    np.testing.assert_allclose(
        _dense_rows(indices, inverse_values, vocab_size),
        solve_dense(damped, dense_gradient),
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        _dense_rows(indices, product_values, vocab_size),
        (damped @ dense_gradient.reshape(-1)).reshape(-1, 2),
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        dense_inverse, solve_dense(damped, dense_vector), rtol=1e-4
    )


def test_embedding_pi_uses_the_diagonal_sum(graph):
    block = fb.EmbeddingKFACFB(FakeLayerCollection(), 4)
    block.register_additional_tower(tf.constant([0, 1]), tf.zeros([2, 3]))
    block.instantiate_factors(((tf.ones([2, 3]),),), 0.5)
    block._input_factor.instantiate_cov_variables()
    # The [vocab] diagonal itself, not a dense [vocab, vocab] matrix.
    assert block._input_cov_for_pi().shape.as_list() == [4]


def test_conv_multi_indep_takes_the_originals_arguments_by_position(graph):
    params = (tf.zeros([3, 3, 2, 4]), tf.zeros([4]))
    block = fb.ConvKFCBasicMultiIndepFB(
        FakeLayerCollection(), params, "SAME", [1, 2, 2, 1], [1, 1, 1, 1], "NHWC",
        "extract_image_patches", 3,
    )
    assert (block._padding, block._strides, block._dilation_rate) == (
        "SAME", (1, 2, 2, 1), (1, 1, 1, 1))
    assert (block._data_format, block._extract_patches_fn) == (
        "NHWC", "extract_image_patches")
    assert block._has_bias and block._filter_shape == (3, 3, 2, 4)
    assert block._num_uses == 3
    with pytest.raises(ValueError, match="num_uses must be None or a positive"):
        fb.ConvKFCBasicMultiIndepFB(FakeLayerCollection(), params, "SAME", num_uses=0)
