"""The layer registration methods of `LayerCollection` (API.md §6).

Every method follows one pattern: resolve the block class from the
approximation (explicit `approx`, then the linked group's, then the default),
check the arguments' shapes, build a fresh block, pass it through
`register_block` (which may return an existing block when reusing), add this
call's data as a tower of the block in effect, and count the uses of the
parameters. `params` are normally variables, `inputs` the layer's inputs and
`outputs` its pre-activations. Bias presence is `isinstance(params, (tuple, list))`.

Errors common to all methods: a bad `approx` or inconsistent shapes ->
ValueError; `reuse=True` with nothing registered -> KeyError; `reuse=True`
with a block of another type, or a duplicate without reuse -> ValueError.
"""

import functools

from kfac.ops import fisher_blocks
from kfac.ops._registration import validation
from kfac.ops._registration.approximations import APPROX_DIAGONAL_NAME
from kfac.ops._registration.approximations import APPROX_KRONECKER_INDEP_NAME
from kfac.ops._registration.approximations import APPROX_KRONECKER_NAME
from kfac.ops._registration.approximations import CONV2D
from kfac.ops._registration.approximations import CONV2D_MULTI
from kfac.ops._registration.approximations import EMBEDDING
from kfac.ops._registration.approximations import EMBEDDING_MULTI
from kfac.ops._registration.approximations import FULLY_CONNECTED
from kfac.ops._registration.approximations import FULLY_CONNECTED_MULTI
from kfac.ops._registration.approximations import GENERIC
from kfac.ops._registration.approximations import VARIABLE_SCOPE
from kfac.ops._registration.approximations import bad_approximation_message

_KINDS_WITHOUT_BIAS = (EMBEDDING, EMBEDDING_MULTI)


def _method_name(layer_kind: str) -> str:
    """The registration method of a layer kind ("conv2d" -> "register_conv2d")."""
    return "register_" + layer_kind


def _has_bias(params) -> bool:
    return isinstance(params, (tuple, list))


def _num_uses_registered(inputs) -> int:
    """Uses added by a *_multi call: one per listed input, one for a folded tensor.

    A folded model reads the weights once, so it counts as one use (the original
    called `len` on the tensor, API.md §12).
    """
    return len(inputs) if isinstance(inputs, (tuple, list)) else 1


def _check_only(method, approx, accepted, layer_kind):
    if approx is not None and approx not in accepted:
        raise ValueError(
            "{}: {}".format(
                method, bad_approximation_message(approx, accepted, layer_kind)
            )
        )


class LayerRegistrationMethods(object):
    """`register_*` methods for layers; mixed into `LayerCollection`.

    Relies on `_resolve_block_type`, `_resolve_reuse`, `fisher_blocks` and
    `_register_layer` (register_block, add the tower, add the uses).
    """

    def _register_layer_of_kind(
        self, layer_kind, params, approx, reuse, make_block, tower_args, uses=1
    ) -> None:
        """Resolves the block class, builds the block, registers it, its tower and uses.

        A bad `approx` is reported first, then a bias where the kind has none;
        `make_block(block_type, approx)` checks the other arguments and builds
        the block, which `_register_layer` registers (or swaps for the existing
        one when reusing) and gives the tower `tower_args` and `uses` uses.
        """
        block_type, approx = self._resolve_block_type(layer_kind, params, approx)
        if layer_kind in _KINDS_WITHOUT_BIAS and _has_bias(params):
            raise ValueError(
                "{}: Bias not supported; `params` must be the embedding "
                "matrix [vocab_size, dim].".format(_method_name(layer_kind))
            )
        block = make_block(block_type, approx)
        self._register_layer(params, block, reuse, tower_args, uses)

    def _register_multi_use_layer(
        self,
        layer_kind,
        params,
        inputs,
        outputs,
        num_uses,
        approx,
        reuse,
        check_use,
        make_block,
    ) -> None:
        """`_register_layer_of_kind` for a layer used several times per example.

        The use lists and `num_uses` must agree and `check_use(method, params,
        inputs, outputs, names)` pass for every use before `make_block(block_type)`
        builds the block; one use is added per listed input.
        """
        method = _method_name(layer_kind)

        def checked_block(block_type, unused_approx):
            self._check_multi_uses(method, params, inputs, outputs, num_uses, reuse)
            check = functools.partial(check_use, method, params)
            validation.check_each_use(check, inputs, outputs)
            return make_block(block_type)

        uses = _num_uses_registered(inputs)
        self._register_layer_of_kind(
            layer_kind, params, approx, reuse, checked_block, (inputs, outputs), uses
        )

    def _check_multi_uses(self, method, params, inputs, outputs, num_uses, reuse):
        """The use lists and `num_uses` agree; `num_uses` known for a new layer.

        Another tower of an existing block may omit `num_uses` (the block has
        it); `reuse=True` without a block is left to `register_block` (KeyError).
        """
        key = tuple(params) if isinstance(params, list) else params
        existing = self.fisher_blocks[key] if key in self.fisher_blocks else None
        if num_uses is None and existing is not None:
            num_uses = getattr(existing, "_num_uses", None)
        required = existing is None and self._resolve_reuse(reuse) is not True
        validation.check_num_uses(method, inputs, outputs, num_uses, required)

    def register_fully_connected(
        self, params, inputs, outputs, approx=None, reuse=VARIABLE_SCOPE
    ) -> None:
        """Registers a fully connected layer `outputs = inputs @ W (+ b)`.

        Args:
          params: weights `[in, out]`, or a pair `(weights, bias [out])`.
          inputs: `[batch, in]`.
          outputs: pre-activations `[batch, out]`.
          approx: "kron" (`FullyConnectedKFACBasicFB`, default) or "diagonal"
            (`FullyConnectedDiagonalFB`).
          reuse: see `register_block`; reuse adds a tower.
        """

        def make_block(block_type, unused_approx):
            validation.check_fully_connected_io(
                "register_fully_connected", params, inputs, outputs
            )
            return block_type(self, has_bias=_has_bias(params))

        self._register_layer_of_kind(
            FULLY_CONNECTED, params, approx, reuse, make_block, (inputs, outputs)
        )

    def register_conv2d(
        self,
        params,
        strides,
        padding,
        inputs,
        outputs,
        data_format=None,
        dilations=None,
        approx=None,
        reuse=VARIABLE_SCOPE,
    ) -> None:
        """Registers a `tf.nn.conv2d` layer (channels last).

        Args:
          params: filter `[kh, kw, in_channels, out_channels]`, or `(filter, bias)`.
          strides: 4 ints `[1, sh, sw, 1]`.
          padding: "SAME" or "VALID".
          inputs: `[batch, H, W, in_channels]`.
          outputs: pre-activations `[batch, H', W', out_channels]`.
          data_format: None or "NHWC".
          dilations: None or 4 ints `[1, dh, dw, 1]`.
          approx: "kron" (`ConvKFCBasicFB`, default) or "diagonal" (`ConvDiagonalFB`).
          reuse: see `register_block`.
        """

        def make_block(block_type, approx):
            _check_conv2d_arguments(
                "register_conv2d",
                params,
                strides,
                padding,
                inputs,
                outputs,
                data_format,
                dilations,
            )
            return _conv2d_block(
                self,
                block_type,
                approx,
                params,
                padding,
                strides,
                data_format,
                dilations,
            )

        self._register_layer_of_kind(
            CONV2D, params, approx, reuse, make_block, (inputs, outputs)
        )

    def register_convolution(
        self,
        params,
        inputs,
        outputs,
        padding,
        strides=None,
        dilation_rate=None,
        data_format=None,
        approx=None,
        reuse=VARIABLE_SCOPE,
    ) -> None:
        """Registers an N-D `tf.nn.convolution` layer (always `ConvKFCBasicFB`).

        Args:
          params: filter `[*kernel, in_channels, out_channels]`, or `(filter, bias)`.
          inputs: `[batch, *spatial, in_channels]`.
          outputs: pre-activations `[batch, *spatial_out, out_channels]`.
          padding: "SAME" or "VALID".
          strides, dilation_rate: None or one int per **spatial** dimension.
          data_format: None or the channels-last format ("NWC", "NHWC", "NDHWC").
          approx: None or "kron".
          reuse: see `register_block`.
        """
        method = "register_convolution"
        _check_only(method, approx, [APPROX_KRONECKER_NAME], "convolution")
        spatial_rank = validation.conv_spatial_rank(method, params, inputs)
        validation.check_padding(method, padding)
        validation.check_data_format(method, data_format, spatial_rank)
        if spatial_rank is not None:
            validation.check_spatial_list(method, "strides", strides, spatial_rank)
            validation.check_spatial_list(
                method, "dilation_rate", dilation_rate, spatial_rank
            )
        validation.check_convolution_io(
            method,
            params,
            inputs,
            outputs,
            padding,
            strides,
            dilation_rate,
            spatial_rank,
        )
        block = fisher_blocks.ConvKFCBasicFB(
            layer_collection=self,
            params=params,
            padding=padding,
            strides=strides,
            dilation_rate=dilation_rate,
            data_format=data_format,
        )
        self._register_layer(params, block, reuse, (inputs, outputs), 1)

    def register_depthwise_conv2d(
        self,
        params,
        inputs,
        outputs,
        strides,
        padding,
        rate=None,
        data_format=None,
        approx=None,
        reuse=VARIABLE_SCOPE,
    ) -> None:
        """Registers a `tf.nn.depthwise_conv2d` layer (`DepthwiseConvDiagonalFB`).

        Args:
          params: filter `[kh, kw, in_channels, channel_multiplier]` (no bias).
          inputs: `[batch, H, W, in_channels]`.
          outputs: `[batch, H', W', in_channels * channel_multiplier]`.
          strides: 4 ints `[1, sh, sw, 1]`.
          padding: "SAME" or "VALID".
          rate: None or 2 spatial dilation ints.
          data_format: None or "NHWC".
          approx: None or "diagonal".
          reuse: see `register_block`.
        """
        method = "register_depthwise_conv2d"
        _check_only(method, approx, [APPROX_DIAGONAL_NAME], "depthwise conv2d")
        _check_conv2d_arguments(
            method,
            params,
            strides,
            padding,
            inputs,
            outputs,
            data_format,
            rate,
            depthwise=True,
        )
        block = fisher_blocks.DepthwiseConvDiagonalFB(
            layer_collection=self,
            params=params,
            strides=strides,
            padding=padding,
            rate=rate,
            data_format=data_format,
        )
        self._register_layer(params, block, reuse, (inputs, outputs), 1)

    def register_separable_conv2d(
        self,
        depthwise_params,
        pointwise_params,
        inputs,
        depthwise_outputs,
        pointwise_outputs,
        strides,
        padding,
        rate=None,
        data_format=None,
        approx=None,
        reuse=VARIABLE_SCOPE,
    ) -> None:
        """Registers a separable conv2d as a depthwise and a 1x1 pointwise layer.

        Args:
          depthwise_params: depthwise filter `[kh, kw, in_channels, multiplier]`.
          pointwise_params: `[1, 1, in_channels * multiplier, out_channels]`, or
            `(filter, bias)`.
          inputs: `[batch, H, W, in_channels]`.
          depthwise_outputs: the intermediate depthwise output (needed).
          pointwise_outputs: pre-activations `[batch, H', W', out_channels]`.
          strides, padding, rate, data_format: those of the depthwise part.
          approx: approximation of the pointwise part (the depthwise part is
            always "diagonal").
          reuse: used for both registrations.
        """
        self.register_depthwise_conv2d(
            params=depthwise_params,
            inputs=inputs,
            outputs=depthwise_outputs,
            strides=strides,
            padding=padding,
            rate=rate,
            data_format=data_format,
            approx=APPROX_DIAGONAL_NAME,
            reuse=reuse,
        )
        self.register_conv2d(
            params=pointwise_params,
            inputs=depthwise_outputs,
            outputs=pointwise_outputs,
            strides=[1, 1, 1, 1],
            padding="VALID",
            data_format=data_format,
            approx=approx,
            reuse=reuse,
        )

    def register_embedding(
        self, params, inputs, outputs, approx=None, reuse=VARIABLE_SCOPE
    ) -> None:
        """Registers an embedding lookup (`EmbeddingKFACFB`).

        Args:
          params: embedding matrix `[vocab_size, dim]` (no bias).
          inputs: integer ids `[batch]` or `[batch, k]`.
          outputs: `[batch, dim]`.
          approx: "kron".
          reuse: see `register_block`.
        """

        def make_block(block_type, unused_approx):
            return block_type(
                self,
                validation.check_embedding_io(
                    "register_embedding", params, inputs, outputs
                ),
            )

        self._register_layer_of_kind(
            EMBEDDING, params, approx, reuse, make_block, (inputs, outputs)
        )

    def register_generic(
        self, params, batch_size, approx=None, reuse=VARIABLE_SCOPE
    ) -> None:
        """Registers parameters without layer structure (`FullFB` or `NaiveDiagonalFB`).

        Their uses are counted as infinite, so `check_registration` never reports
        a use mismatch for them.

        Args:
          params: a variable or a tuple of variables.
          batch_size: this tower's batch size (positive int or scalar Tensor).
          approx: "full" (default) or "diagonal".
          reuse: see `register_block`.
        """

        def make_block(block_type, unused_approx):
            validation.check_batch_size("register_generic", batch_size)
            return block_type(self, params)

        self._register_layer_of_kind(
            GENERIC, params, approx, reuse, make_block, (batch_size,), float("inf")
        )

    def register_fully_connected_multi(
        self, params, inputs, outputs, num_uses=None, approx=None, reuse=VARIABLE_SCOPE
    ) -> None:
        """Registers a fully connected layer applied several times per example.

        Args:
          params: weights `[in, out]`, or `(weights, bias)`.
          inputs: list over uses of `[batch, in]`, or one folded `[num_uses*batch, in]`.
          outputs: list over uses of `[batch, out]`, or one folded tensor.
          num_uses: number of uses; required when both are folded.
          approx: "kron_indep" (default), "kron_series_1" or "kron_series_2".
          reuse: see `register_block`; reuse adds a tower (mini-batch), not a use.
        """
        self._register_multi_use_layer(
            FULLY_CONNECTED_MULTI,
            params,
            inputs,
            outputs,
            num_uses,
            approx,
            reuse,
            check_use=validation.check_fully_connected_io,
            make_block=lambda block_type: block_type(
                self, has_bias=_has_bias(params), num_uses=num_uses
            ),
        )

    def register_conv2d_multi(
        self,
        params,
        strides,
        padding,
        inputs,
        outputs,
        num_uses=None,
        data_format=None,
        dilations=None,
        approx=None,
        reuse=VARIABLE_SCOPE,
    ) -> None:
        """Registers a conv2d layer applied several times (`ConvKFCBasicMultiIndepFB`).

        Args are those of `register_conv2d`, with `inputs`/`outputs` lists over
        uses or single folded tensors, and `num_uses` as in
        `register_fully_connected_multi`; `approx` may only be "kron_indep".
        """
        self._register_multi_use_layer(
            CONV2D_MULTI,
            params,
            inputs,
            outputs,
            num_uses,
            approx,
            reuse,
            check_use=lambda method, params, x, y, names: _check_conv2d_arguments(
                method, params, strides, padding, x, y, data_format, dilations, names
            ),
            make_block=lambda block_type: _conv2d_block(
                self,
                block_type,
                APPROX_KRONECKER_INDEP_NAME,
                params,
                padding,
                strides,
                data_format,
                dilations,
                num_uses=num_uses,
            ),
        )

    def register_embedding_multi(
        self, params, inputs, outputs, num_uses=None, approx=None, reuse=VARIABLE_SCOPE
    ) -> None:
        """Registers an embedding used several times (`EmbeddingKFACMultiIndepFB`).

        Args are those of `register_embedding`, with `inputs`/`outputs` lists
        over uses or single folded tensors, and `num_uses` as in
        `register_fully_connected_multi`; `approx` may only be "kron_indep".
        """
        self._register_multi_use_layer(
            EMBEDDING_MULTI,
            params,
            inputs,
            outputs,
            num_uses,
            approx,
            reuse,
            check_use=validation.check_embedding_io,
            make_block=lambda block_type: block_type(
                self,
                validation.check_embedding_io(
                    "register_embedding_multi", params, None, None
                ),
                num_uses=num_uses,
            ),
        )


def _conv2d_block(
    layer_collection,
    block_type,
    approx,
    params,
    padding,
    strides,
    data_format,
    dilations,
    **multi_use,
):
    """A conv2d block of `block_type` (4-entry `strides`/`dilations`).

    The diagonal block takes `dilations`; the Kronecker ones take them as
    `dilation_rate` and extract patches with `tf.extract_image_patches`, as in
    the original.
    """
    common = dict(
        layer_collection=layer_collection,
        params=params,
        padding=padding,
        strides=strides,
        data_format=data_format,
    )
    if approx == APPROX_DIAGONAL_NAME:
        return block_type(dilations=dilations, **common)
    return block_type(
        dilation_rate=dilations,
        extract_patches_fn="extract_image_patches",
        **common,
        **multi_use,
    )


def _check_conv2d_arguments(
    method,
    params,
    strides,
    padding,
    inputs,
    outputs,
    data_format,
    dilations,
    names=("inputs", "outputs"),
    depthwise=False,
):
    """Checks a channels-last 2-D convolution's arguments.

    `strides` has 4 entries `[1, sh, sw, 1]`; `dilations` is None or 4 entries
    as well, except for a depthwise convolution, whose `rate` has the 2
    spatial entries. The data format is checked first: the other checks
    assume channels last.
    """
    validation.check_data_format(method, data_format, 2)
    validation.check_full_strides(method, "strides", strides, allow_none=False)
    if depthwise:
        validation.check_spatial_list(method, "rate", dilations, 2)
        spatial_dilations = dilations
    else:
        validation.check_full_strides(method, "dilations", dilations, allow_none=True)
        spatial_dilations = None if dilations is None else dilations[1:3]
    validation.check_padding(method, padding)
    validation.check_convolution_io(
        method,
        params,
        inputs,
        outputs,
        padding,
        strides[1:3],
        spatial_dilations,
        spatial_rank=2,
        depthwise=depthwise,
        names=names,
    )
