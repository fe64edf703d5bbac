"""The layer `register_*` methods of `LayerCollection` (API.md §6).

Each method keeps the original's signature and docstring and hands its
arguments to the module of its layer kind (`fully_connected`, `conv2d`,
`convolution`, `depthwise`, `embedding`, `generic`), which checks them, builds
the block and registers it through the collection's public methods.
`params` are normally variables, `inputs` the layer's inputs and `outputs` its
pre-activations. Bias presence is `isinstance(params, (tuple, list))`.

Errors common to all methods: a bad `approx` or inconsistent shapes ->
ValueError; `reuse=True` with nothing registered -> KeyError; `reuse=True`
with a block of another type, or a duplicate without reuse -> ValueError.
"""

from kfac.ops._registration import conv2d
from kfac.ops._registration import convolution
from kfac.ops._registration import depthwise
from kfac.ops._registration import embedding
from kfac.ops._registration import fully_connected
from kfac.ops._registration import generic
from kfac.ops._registration.common import VARIABLE_SCOPE


class LayerRegistrationMethods(object):
    """`register_*` methods for layers; mixed into `LayerCollection`.

    The kind modules use only the collection's public methods
    (`resolve_approximation`, `register_block`, `add_uses`,
    `registered_variables`, `fisher_blocks`, `factor_cache`).
    """

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
        fully_connected.register_fully_connected(
            self, params, inputs, outputs, approx, reuse
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
        conv2d.register_conv2d(
            self,
            params,
            strides,
            padding,
            inputs,
            outputs,
            data_format,
            dilations,
            approx,
            reuse,
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
        convolution.register_convolution(
            self,
            params,
            inputs,
            outputs,
            padding,
            strides,
            dilation_rate,
            data_format,
            approx,
            reuse,
        )

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
        depthwise.register_depthwise_conv2d(
            self,
            params,
            inputs,
            outputs,
            strides,
            padding,
            rate,
            data_format,
            approx,
            reuse,
        )

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
        depthwise.register_separable_conv2d(
            self,
            depthwise_params,
            pointwise_params,
            inputs,
            depthwise_outputs,
            pointwise_outputs,
            strides,
            padding,
            rate,
            data_format,
            approx,
            reuse,
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
        embedding.register_embedding(self, params, inputs, outputs, approx, reuse)

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
        generic.register_generic(self, params, batch_size, approx, reuse)

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
        fully_connected.register_fully_connected_multi(
            self, params, inputs, outputs, num_uses, approx, reuse
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
        conv2d.register_conv2d_multi(
            self,
            params,
            strides,
            padding,
            inputs,
            outputs,
            num_uses,
            data_format,
            dilations,
            approx,
            reuse,
        )

    def register_embedding_multi(
        self, params, inputs, outputs, num_uses=None, approx=None, reuse=VARIABLE_SCOPE
    ) -> None:
        """Registers an embedding used several times (`EmbeddingKFACMultiIndepFB`).

        Args are those of `register_embedding`, with `inputs`/`outputs` lists
        over uses or single folded tensors, and `num_uses` as in
        `register_fully_connected_multi`; `approx` may only be "kron_indep".
        """
        embedding.register_embedding_multi(
            self, params, inputs, outputs, num_uses, approx, reuse
        )
