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

from kfac.ops import fisher_blocks
from kfac.ops._registration import validation
from kfac.ops._registration.approximations import APPROX_DIAGONAL_NAME
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

    Relies on `fisher_blocks`, `_resolve_block_type` and `_register_layer`.
    """

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
        block_type, _ = self._resolve_block_type(FULLY_CONNECTED, params, approx)
        validation.check_fully_connected_io(
            "register_fully_connected", params, inputs, outputs
        )
        block = block_type(self, has_bias=_has_bias(params))
        self._register_layer(params, block, reuse, (inputs, outputs), 1)

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
        method = "register_conv2d"
        block_type, approx = self._resolve_block_type(CONV2D, params, approx)
        _check_conv2d_arguments(
            method, params, strides, padding, inputs, outputs, data_format, dilations
        )
        if approx == APPROX_KRONECKER_NAME:
            block = block_type(
                layer_collection=self,
                params=params,
                padding=padding,
                strides=strides,
                data_format=data_format,
                dilation_rate=dilations,
                extract_patches_fn="extract_image_patches",
            )
        else:
            block = block_type(
                layer_collection=self,
                params=params,
                padding=padding,
                strides=strides,
                dilations=dilations,
                data_format=data_format,
            )
        self._register_layer(params, block, reuse, (inputs, outputs), 1)

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
        validation.check_data_format(method, data_format, 2)
        validation.check_full_strides(method, "strides", strides, allow_none=False)
        validation.check_spatial_list(method, "rate", rate, 2)
        validation.check_padding(method, padding)
        validation.check_convolution_io(
            method,
            params,
            inputs,
            outputs,
            padding,
            strides[1:3],
            rate,
            spatial_rank=2,
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
        method = "register_embedding"
        block_type, _ = self._resolve_block_type(EMBEDDING, params, approx)
        if _has_bias(params):
            raise ValueError(
                "{}: Bias not supported; `params` must be the embedding "
                "matrix [vocab_size, dim].".format(method)
            )
        vocab_size = validation.check_embedding_io(method, params, inputs, outputs)
        block = block_type(self, vocab_size)
        self._register_layer(params, block, reuse, (inputs, outputs), 1)

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
        block_type, _ = self._resolve_block_type(GENERIC, params, approx)
        validation.check_batch_size("register_generic", batch_size)
        self._register_layer(
            params, block_type(self, params), reuse, (batch_size,), float("inf")
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
        method = "register_fully_connected_multi"
        block_type, _ = self._resolve_block_type(FULLY_CONNECTED_MULTI, params, approx)
        self._check_multi_uses(method, params, inputs, outputs, num_uses, reuse)
        validation.check_each_use(
            lambda x, y, names: validation.check_fully_connected_io(
                method, params, x, y, names
            ),
            inputs,
            outputs,
        )
        block = block_type(self, has_bias=_has_bias(params), num_uses=num_uses)
        self._register_layer(
            params, block, reuse, (inputs, outputs), _num_uses_registered(inputs)
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
        method = "register_conv2d_multi"
        block_type, _ = self._resolve_block_type(CONV2D_MULTI, params, approx)
        self._check_multi_uses(method, params, inputs, outputs, num_uses, reuse)
        validation.check_each_use(
            lambda x, y, names: _check_conv2d_arguments(
                method, params, strides, padding, x, y, data_format, dilations, names
            ),
            inputs,
            outputs,
        )
        block = block_type(
            layer_collection=self,
            params=params,
            padding=padding,
            strides=strides,
            data_format=data_format,
            dilation_rate=dilations,
            extract_patches_fn="extract_image_patches",
            num_uses=num_uses,
        )
        self._register_layer(
            params, block, reuse, (inputs, outputs), _num_uses_registered(inputs)
        )

    def register_embedding_multi(
        self, params, inputs, outputs, num_uses=None, approx=None, reuse=VARIABLE_SCOPE
    ) -> None:
        """Registers an embedding used several times (`EmbeddingKFACMultiIndepFB`).

        Args are those of `register_embedding`, with `inputs`/`outputs` lists
        over uses or single folded tensors, and `num_uses` as in
        `register_fully_connected_multi`; `approx` may only be "kron_indep".
        """
        method = "register_embedding_multi"
        block_type, _ = self._resolve_block_type(EMBEDDING_MULTI, params, approx)
        if _has_bias(params):
            raise ValueError(
                "{}: Bias not supported; `params` must be the embedding "
                "matrix [vocab_size, dim].".format(method)
            )
        self._check_multi_uses(method, params, inputs, outputs, num_uses, reuse)
        validation.check_each_use(
            lambda x, y, names: validation.check_embedding_io(
                method, params, x, y, names
            ),
            inputs,
            outputs,
        )
        vocab_size = validation.check_embedding_io(method, params, None, None)
        block = block_type(self, vocab_size, num_uses=num_uses)
        self._register_layer(
            params, block, reuse, (inputs, outputs), _num_uses_registered(inputs)
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
):
    validation.check_full_strides(method, "strides", strides, allow_none=False)
    validation.check_full_strides(method, "dilations", dilations, allow_none=True)
    validation.check_padding(method, padding)
    validation.check_data_format(method, data_format, 2)
    validation.check_convolution_io(
        method,
        params,
        inputs,
        outputs,
        padding,
        strides[1:3],
        None if dilations is None else dilations[1:3],
        spatial_rank=2,
        names=names,
    )
