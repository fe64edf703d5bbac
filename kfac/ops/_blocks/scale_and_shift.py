"""Blocks of a per-channel scale and shift (batch norm, layer norm).

`outputs = inputs * scale + shift` with `inputs` the normalised tensor; the
Fisher over the flattened `(scale, shift)` vector is estimated from exact
per-example gradients (`kfac/ops/_factors/scale_and_shift.py`):
`ScaleAndShiftFullFB` keeps it whole (`[n, n]`, n = the parameter count, 2C
for a `[C]` scale and shift), `ScaleAndShiftDiagonalFB` its diagonal.
Vectors come in the format of the registered key: `scale`, `shift` or
`(scale, shift)`.
"""

from kfac.ops._blocks import damping as damping_lib
from kfac.ops._blocks.base import FisherBlock
from kfac.ops._blocks.dense import FlattenedVectorProducts
from kfac.ops._blocks.towers import InputOutputMultiTower
from kfac.ops._factors import scale_and_shift as factors


def _static_shape(param):
    return None if param is None else tuple(param.shape.as_list())


class _ScaleAndShiftFB(InputOutputMultiTower, FlattenedVectorProducts, FisherBlock):
    """Shared part: towers of `(inputs, outputs)` and one factor."""

    _FACTOR_CLASS = None  # set by subclasses

    def __init__(self, layer_collection, scale=None, shift=None):
        """Creates the block.

        Args:
          layer_collection: owner that builds/shares the factors.
          scale: the scale variable (its static shape is used), or None.
          shift: the shift variable, or None (not both None).
        """
        if scale is None and shift is None:
            raise ValueError("ScaleAndShift blocks need a scale, a shift or both.")
        self._scale_shape = _static_shape(scale)
        self._shift_shape = _static_shape(shift)
        super(_ScaleAndShiftFB, self).__init__(layer_collection)

    def instantiate_factors(self, grads_list, damping):
        inputs, grads_list = self._process_data(grads_list)
        self._factor = self._factors.make_or_get_factor(
            self._FACTOR_CLASS,
            (inputs, grads_list, self._scale_shape, self._shift_shape),
        )
        self._damping_func = damping_lib.constant_damping_func(damping)


class ScaleAndShiftFullFB(_ScaleAndShiftFB):
    """Full Fisher of the scale and shift: `(F + d I)^exp v` with `F [n, n]`."""

    _FACTOR_CLASS = factors.ScaleAndShiftFullFactor

    def register_matpower(self, exp):
        self._factor.register_matpower(exp, self._damping_func)


class ScaleAndShiftDiagonalFB(_ScaleAndShiftFB):
    """Diagonal Fisher of the scale and shift: `(diag(F) + d)^exp ∘ v`."""

    _FACTOR_CLASS = factors.ScaleAndShiftDiagonalFactor

    def register_matpower(self, exp):
        # Diagonal powers are computed when multiplying; nothing to maintain.
        pass
