"""Embedding lookups `outputs = params[inputs]`, used once or several times.

Approximations: "kron" (`EmbeddingKFACFB`); used several times per example,
"kron_indep" (`EmbeddingKFACMultiIndepFB`). `params` is the embedding matrix
`[vocab_size, dim]` with a static vocabulary size; there is no bias.
"""

from kfac.ops._blocks.embedding import EmbeddingKFACFB
from kfac.ops._blocks.embedding import EmbeddingKFACMultiIndepFB
from kfac.ops._registration.common import APPROX_KRONECKER_INDEP_NAME
from kfac.ops._registration.common import APPROX_KRONECKER_NAME
from kfac.ops._registration.common import VARIABLE_SCOPE
from kfac.ops._registration.common import LayerKind
from kfac.ops._registration.common import register_layer
from kfac.ops._registration.common import tower_arguments
from kfac.ops._registration.multi_use import multi_use_weights
from kfac.ops._registration.multi_use import register_multi_use_layer
from kfac.ops._registration.shapes import base_dtype
from kfac.ops._registration.shapes import check_dim
from kfac.ops._registration.shapes import check_rank
from kfac.ops._registration.shapes import check_same_batch
from kfac.ops._registration.shapes import check_same_dtype
from kfac.ops._registration.shapes import describe
from kfac.ops._registration.shapes import dims
from kfac.ops._registration.shapes import error
from kfac.ops._registration.shapes import static_shape
from kfac.ops._registration.weights import combine_mask_and_weights

_EMBEDDING_MATRIX = "the embedding matrix [vocab_size, dim]"

EMBEDDING = LayerKind(
    "embedding",
    {APPROX_KRONECKER_NAME: EmbeddingKFACFB},
    default=APPROX_KRONECKER_NAME,
    single_params=_EMBEDDING_MATRIX,
)

EMBEDDING_MULTI = LayerKind(
    "embedding_multi",
    {APPROX_KRONECKER_INDEP_NAME: EmbeddingKFACMultiIndepFB},
    default=APPROX_KRONECKER_INDEP_NAME,
    single_params=_EMBEDDING_MATRIX,
)


def check_embedding_io(
    method, params, inputs, outputs, names=("inputs", "outputs")
) -> int:
    """Checks params `[vocab, dim]`, int ids, outputs `[..., dim]`; returns vocab."""
    raw_shape = static_shape(params)
    shape = check_rank(method, "params", params, 2, "[vocab_size, dim]", strict=False)
    vocab_size, dim = dims(shape, 2)
    if vocab_size is None and raw_shape.rank:
        vocab_size = raw_shape.as_list()[0]
    if vocab_size is None:
        raise error(
            method,
            "`params` must have a static vocabulary size (dimension 0); got shape "
            "{}.".format(describe(shape)),
        )
    checked = []
    if inputs is not None:
        dtype = base_dtype(inputs)
        if dtype is not None and not dtype.is_integer:
            raise error(
                method,
                "`{}` must hold integer ids; got dtype {}.".format(
                    names[0], dtype.name
                ),
            )
        checked.append(
            (
                names[0],
                check_rank(
                    method,
                    names[0],
                    inputs,
                    (1, 2),
                    "[batch] or [batch, k]",
                    strict=False,
                ),
            )
        )
    if outputs is not None:
        out_shape = check_rank(
            method, names[1], outputs, (1, None), "[batch, dim]", strict=False
        )
        check_dim(
            method,
            names[1],
            out_shape,
            -1,
            dim,
            "[batch, {}]".format(dim),
            "for params of shape {}".format(describe(shape)),
        )
        checked.append((names[1], out_shape))
    if len(checked) == 2:
        check_same_batch(method, *checked)
    check_same_dtype(method, [("params", params), (names[1], outputs)])
    return int(vocab_size)


def register_embedding(
    layer_collection,
    params,
    inputs,
    outputs,
    approx=None,
    reuse=VARIABLE_SCOPE,
    mask=None,
    weights=None,
) -> None:
    """Registers an embedding lookup (`EmbeddingKFACFB`).

    Args:
      params: embedding matrix `[vocab_size, dim]` (no bias).
      inputs: integer ids `[batch]` or `[batch, k]`.
      outputs: `[batch, dim]`.
      approx: "kron".
      reuse: see `register_block`.
      mask, weights: (port additions) 0/1 values or non-negative weights of
        the leading dims of `outputs` (or a prefix): padded rows or positions
        count for nothing; see `register_fully_connected`.
    """
    position_weights = combine_mask_and_weights(
        EMBEDDING.method, mask, weights, outputs, "outputs"
    )

    def make_block(block_type, unused_approx):
        vocab_size = check_embedding_io(EMBEDDING.method, params, inputs, outputs)
        return block_type(layer_collection.factor_cache, vocab_size)

    register_layer(
        layer_collection,
        EMBEDDING,
        params,
        approx,
        reuse,
        make_block,
        tower_arguments(inputs, outputs, position_weights),
    )


def register_embedding_multi(
    layer_collection,
    params,
    inputs,
    outputs,
    num_uses=None,
    approx=None,
    reuse=VARIABLE_SCOPE,
    mask=None,
    weights=None,
) -> None:
    """Registers an embedding used several times (`EmbeddingKFACMultiIndepFB`).

    Args are those of `register_embedding`, with `inputs`/`outputs` lists
    over uses or single folded tensors, `num_uses` as in
    `register_fully_connected_multi`, and `mask`/`weights` in the formats of
    `register_fully_connected_multi`; `approx` may only be "kron_indep".
    """
    outputs_dtype = base_dtype(
        outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    )
    use_weights = multi_use_weights(
        EMBEDDING_MULTI.method, mask, weights, inputs, num_uses, outputs_dtype
    )
    register_multi_use_layer(
        layer_collection,
        EMBEDDING_MULTI,
        params,
        inputs,
        outputs,
        num_uses,
        approx,
        reuse,
        check_use=check_embedding_io,
        make_block=lambda block_type: block_type(
            layer_collection.factor_cache,
            check_embedding_io(EMBEDDING_MULTI.method, params, None, None),
            num_uses=num_uses,
        ),
        weights=use_weights,
    )
