"""Where a factor's data comes from: its sources, towers, dtype and device.

Every factor answers four bookkeeping hooks of `FisherFactor` (`_num_sources`,
`_num_towers`, `_dtype`, `_get_data_device`). They follow from how its data is
laid out, of which there are four kinds; a factor inherits the one it has
(before its `FisherFactor` base) and names its data in one property.
"""


class SourcesByTowers(object):
    """Data `_data[source][tower]`: one tensor per gradient source and tower
    (the Kronecker factors of dense layers; the output factor of convolutions)."""

    @property
    def _num_sources(self):
        return len(self._data)

    @property
    def _num_towers(self):
        return len(self._data[0])

    @property
    def _dtype(self):
        return self._data[0][0].dtype

    def _get_data_device(self, tower):
        return self._data[0][tower].device


class InputsByTower(object):
    """Data `_tower_inputs[tower]`, one source: the layer's inputs
    (convolution input factors, embedding ids)."""

    @property
    def _num_sources(self):
        return 1

    @property
    def _num_towers(self):
        return len(self._tower_inputs)

    @property
    def _dtype(self):
        return self._tower_inputs[0].dtype

    def _get_data_device(self, tower):
        return self._tower_inputs[tower].device


class InputsAndGradients(object):
    """Data `_inputs[tower]` and `_outputs_grads[source][tower]`, placed with
    the inputs (the diagonal factors of dense and convolution layers); the
    subclass says whose dtype the statistic has."""

    @property
    def _num_sources(self):
        return len(self._outputs_grads)

    @property
    def _num_towers(self):
        return len(self._inputs)

    def _get_data_device(self, tower):
        return self._inputs[tower].device


class SummedGradients(object):
    """Data `_params_grads[source]`: gradients already summed over the towers,
    not placed (the factors of generic parameters)."""

    @property
    def _num_sources(self):
        return len(self._params_grads)

    @property
    def _num_towers(self):
        return 1

    @property
    def _dtype(self):
        return self._params_grads[0][0].dtype

    def _get_data_device(self, tower):
        return None
