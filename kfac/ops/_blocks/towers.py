"""Per-tower bookkeeping for blocks fed by layer inputs and output gradients.

A tower is one registered mini-batch slice. Factors receive their data as
`inputs[tower]` and `grads_list[source][tower]`; how towers are merged is the
configuration's `tower_strategy` (`fisher_factors.TOWER_STRATEGY` by
default), checked when the data is packed:

* `"concat"`: all towers become one `PartitionedTensor` (factors see 1 tower);
* `"separate"`: tuples of per-tower tensors (factors average per-tower estimates).

Everything handed to factors is a tuple, so `(FactorClass, args)` is hashable and
two blocks on the same tensors share a factor.
"""

import itertools

import tensorflow.compat.v1 as tf

from kfac.ops._factors import positions
from kfac.ops._utils import partitioned_tensor


def with_position_statistics(
    args: tuple, position_statistics, skipped_defaults: tuple = ()
) -> tuple:
    """A factor's constructor arguments, with `position_statistics` last unless
    None (so an unweighted factor keeps the original's arguments and name).

    `skipped_defaults`: the values of the optional arguments between `args`
    and `position_statistics` in the factor's signature, inserted only with it.
    """
    if position_statistics is None:
        return args
    return args + tuple(skipped_defaults) + (position_statistics,)


class InputOutputMultiTower(object):
    """Mixin for blocks fed by layer inputs and output (pre-activation) gradients.

    Keeps one `(inputs, outputs)` pair per tower and packs them for the factors.
    """

    def __init__(self, *args, **kwargs):
        self._tower_inputs = []
        self._tower_outputs = []
        self._tower_weights = []
        super(InputOutputMultiTower, self).__init__(*args, **kwargs)

    @property
    def _inputs(self):
        """List over towers of the layer inputs."""
        return self._tower_inputs

    @property
    def _outputs(self):
        """List over towers of the layer outputs (pre-activations)."""
        return self._tower_outputs

    def register_additional_tower(self, inputs, outputs, weights=None):
        """Appends one tower: the layer's `inputs` and pre-activation `outputs`.

        Args:
            inputs, outputs: the tower's data.
            weights: (port addition) position weights or a 0/1 mask shaped like
                the outputs' leading dims (the `*_multi` blocks: like the
                inputs' format), or None; see `_factors/positions.py`.
        """
        self._tower_inputs.append(inputs)
        self._tower_outputs.append(outputs)
        self._tower_weights.append(weights)

    @property
    def has_weights(self) -> bool:
        """Whether any tower was registered with position weights or a mask."""
        return any(weights is not None for weights in self._tower_weights)

    def _tower_weights_or_ones(self):
        """Per tower, its weights, or ones like its outputs' leading dims when
        only some towers have weights."""
        return [
            weights
            if weights is not None
            else tf.ones(tf.shape(outputs)[:-1], dtype=outputs.dtype)
            for weights, outputs in zip(self._tower_weights, self._tower_outputs)
        ]

    def _position_statistics(self, role, layout, reduce=False, num_uses=None):
        """The `positions.PositionStatistics` of one of this block's factors, or
        None for the plain (unweighted, expand) statistic."""
        weights = self._process_weights()
        if weights is None and not reduce:
            return None
        return positions.PositionStatistics(role, layout, weights, reduce, num_uses)

    def _process_weights(self):
        """The towers' weights in the factors' format, or None without weights:
        one `PartitionedTensor` under "concat", a tuple over towers otherwise
        (the same grouping `_process_data` gives the inputs)."""
        if not self.has_weights:
            return None
        weights = self._tower_weights_or_ones()
        if self._config.checked_tower_strategy() == "concat":
            return (partitioned_tensor.PartitionedTensor(weights),)
        return tuple(weights)

    @property
    def num_registered_towers(self):
        result = len(self._tower_inputs)
        assert result == len(self._tower_outputs)
        return result

    def tensors_to_compute_grads(self):
        """`tuple(self._outputs)`: gradients are taken w.r.t. each tower's outputs."""
        return tuple(self._outputs)

    def _process_data(self, grads_list):
        """Packs inputs and gradients in the factors' `[source][tower]` format.

        Args:
            grads_list: tuple over sources of tuples over towers of gradients.

        Returns:
            `(inputs, grads_list)`: with `"concat"`,
            `((PartitionedTensor(towers),), ((PartitionedTensor(grads),), ...))`;
            with `"separate"`, the per-tower tuples unchanged.

        Raises:
            ValueError: for an unknown `TOWER_STRATEGY`.
        """
        strategy = self._config.checked_tower_strategy()
        inputs = self._inputs
        if strategy == "concat":
            inputs = (partitioned_tensor.PartitionedTensor(inputs),)
            grads_list = tuple(
                (partitioned_tensor.PartitionedTensor(grads),) for grads in grads_list
            )
        else:
            inputs = tuple(inputs)
            grads_list = tuple(tuple(grads) for grads in grads_list)
        return inputs, grads_list


class FullyConnectedMultiTower(InputOutputMultiTower):
    """Towers of a fully connected layer, whose parameters are `weights
    [in, out]` or `(weights, bias [out])` (`_has_bias`)."""

    def __init__(self, layer_collection, has_bias=False):
        """Creates the block.

        Args:
            layer_collection: owner that builds/shares the factors.
            has_bias: whether the parameters are `(weights [in, out], bias [out])`.
        """
        self._has_bias = has_bias
        super(FullyConnectedMultiTower, self).__init__(layer_collection)


class InputOutputMultiTowerMultiUse(InputOutputMultiTower):
    """Tower mixin for layers applied several times per example (RNN steps, sharing).

    Per tower, the inputs (and, independently, each source's gradients) come
    either as a list over uses of `[B, ...]` tensors, or "folded" as one tensor
    whose rows are `num_uses·B`, use-major (a reshape of `[num_uses, B, ...]`).
    """

    def __init__(self, num_uses=None, *args, **kwargs):
        if num_uses is not None and (
            isinstance(num_uses, bool) or int(num_uses) != num_uses or num_uses < 1
        ):
            raise ValueError(
                "num_uses must be None or a positive integer, got %r." % (num_uses,)
            )
        self._num_uses = None if num_uses is None else int(num_uses)
        super(InputOutputMultiTowerMultiUse, self).__init__(*args, **kwargs)

    @property
    def num_uses(self):
        """Uses per example: as given, inferred from the data, or None (not yet)."""
        return self._num_uses

    def _infer_num_uses(self, per_tower_lists, what):
        """Checks the use lists' lengths against each other and `num_uses`."""
        num_uses = len(per_tower_lists[0])
        if self._num_uses is not None and self._num_uses != num_uses:
            raise ValueError(
                "num_uses (%d) does not match the number of uses in the %s (%d)."
                % (self._num_uses, what, num_uses)
            )
        lengths = [len(uses) for uses in per_tower_lists]
        if any(length != num_uses for length in lengths):
            raise ValueError(
                "The number of uses in the %s differs between towers: %s."
                % (what, lengths)
            )
        self._num_uses = num_uses

    @staticmethod
    def _merge_uses(per_tower_lists, strategy):
        """List-of-lists (tower, use) → factor format for one kind of tensor.

        "concat": one `PartitionedTensor` ordered use-major, tower-minor, so its
        rows are a reshape of `[num_uses, total_batch, ...]`; "separate": one
        `PartitionedTensor` over uses per tower.
        """
        if strategy == "concat":
            use_major = itertools.chain.from_iterable(zip(*per_tower_lists))
            return (partitioned_tensor.PartitionedTensor(list(use_major)),)
        return tuple(
            partitioned_tensor.PartitionedTensor(uses) for uses in per_tower_lists
        )

    def _tower_weights_or_ones(self):
        """Per tower, its weights (in the format of its inputs: a list over uses
        or one folded tensor), or ones of that format."""

        def ones_like_rows(tensor):
            tensor = tf.convert_to_tensor(tensor)
            return tf.ones(tf.shape(tensor)[:1], dtype=tensor.dtype)

        towers = []
        for weights, inputs in zip(self._tower_weights, self._tower_inputs):
            if weights is None:
                if isinstance(inputs, (list, tuple)):
                    weights = [ones_like_rows(use) for use in inputs]
                else:
                    weights = ones_like_rows(inputs)
            towers.append(weights)
        return towers

    def _process_weights(self):
        """The towers' weights in the factors' format (use-major like the
        inputs, see `_process_data`), or None without weights."""
        if not self.has_weights:
            return None
        strategy = self._config.checked_tower_strategy()
        weights = self._tower_weights_or_ones()
        if isinstance(weights[0], (list, tuple)):
            return self._merge_uses(weights, strategy)
        return tuple(weights)  # folded: one tensor per tower, as the inputs

    def _process_data(self, grads_list):
        """Packs multi-use inputs and gradients in the factors' format.

        Folded tensors are passed through as tuples over towers (the original left
        a list, an unhashable factor key; fixed here).

        Args:
            grads_list: tuple over sources of tuples over towers, each either a
                list over uses or one folded tensor.

        Returns:
            `(inputs, grads_list)` as for `InputOutputMultiTower._process_data`.

        Raises:
            ValueError: for an unknown `TOWER_STRATEGY`; if the number of uses in
                the lists disagrees with `num_uses` or between towers; if
                `num_uses` cannot be inferred (folded format without `num_uses`).
        """
        strategy = self._config.checked_tower_strategy()
        inputs = self._inputs
        if isinstance(inputs[0], (list, tuple)):
            self._infer_num_uses(inputs, "inputs")
            inputs = self._merge_uses(inputs, strategy)
        else:
            inputs = tuple(inputs)

        if isinstance(grads_list[0][0], (list, tuple)):
            self._infer_num_uses(
                [grads for source in grads_list for grads in source], "outputs"
            )
            grads_list = tuple(
                self._merge_uses(source, strategy) for source in grads_list
            )
        else:
            grads_list = tuple(tuple(source) for source in grads_list)

        if self._num_uses is None:
            raise ValueError(
                "num_uses must be given when it cannot be inferred from the inputs "
                "or outputs (both were single folded Tensors instead of lists over "
                "uses)."
            )
        return inputs, grads_list
