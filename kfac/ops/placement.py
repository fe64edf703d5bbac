"""Where the estimator puts its variables and update ops (API.md §7).

`RoundRobinPlacementMixin` supplies the two abstract methods of
`estimator.FisherEstimator`. Covariance statistics are cheap per step but
run every step, inverses are expensive but run rarely; spreading each kind
over a list of devices, factor by factor, balances the work.
"""

import itertools

import tensorflow.compat.v1 as tf


def _make_thunk_on_device(func, device):
    """A thunk calling `func()` under `tf.device(device)`, each time it is called."""

    def thunk():
        with tf.device(device):
            return func()

    return thunk


class RoundRobinPlacementMixin(object):
    """Assigns factor *i* to device `i mod k` of the given device lists.

    Args:
      cov_devices: iterable of device strings for the covariance variables and
        their update ops, or None for the caller's device context.
      inv_devices: iterable of device strings for the inverse-update ops, or
        None. Inverse *variables* are never placed explicitly: they live where
        the preconditioner is applied (the caller's device context decides).
      *args, **kwargs: forwarded to the next class (`FisherEstimator`).
    """

    def __init__(self, cov_devices=None, inv_devices=None, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cov_devices = cov_devices
        self._inv_devices = inv_devices

    def make_vars_and_create_op_thunks(self, scope=None, damping=None):
        """Creates all factor variables; returns the cov and inv update thunks.

        Cov variable *i* is created under `cov_devices[i mod k]` and its update
        thunk runs there; inverse-update thunk *i* runs under
        `inv_devices[i mod k]`. The thunks build new ops on every call, so they
        can be used inside `tf.cond`/`tf.case`/`utils.batch_execute`.

        Args:
          scope: variable scope for the variables and ops (default: the
            estimator's name).
          damping: the blocks' damping (None: the estimator's constructor
            damping); see `FisherEstimator.create_ops_and_vars_thunks`.
        """
        (
            cov_variable_thunks,
            cov_update_thunks,
            inv_variable_thunks,
            inv_update_thunks,
        ) = self.create_ops_and_vars_thunks(scope=scope, damping=damping)

        if self._cov_devices:
            devices = itertools.cycle(self._cov_devices)
            placed_cov_update_thunks = []
            for variable_thunk, update_thunk, device in zip(
                cov_variable_thunks, cov_update_thunks, devices
            ):
                with tf.device(device):
                    variable_thunk()
                placed_cov_update_thunks.append(
                    _make_thunk_on_device(update_thunk, device)
                )
            cov_update_thunks = placed_cov_update_thunks
        else:
            for variable_thunk in cov_variable_thunks:
                variable_thunk()

        for variable_thunk in inv_variable_thunks:
            variable_thunk()

        if self._inv_devices:
            devices = itertools.cycle(self._inv_devices)
            inv_update_thunks = [
                _make_thunk_on_device(thunk, device)
                for thunk, device in zip(inv_update_thunks, devices)
            ]
        return list(cov_update_thunks), list(inv_update_thunks)

    def make_ops_and_vars(self, scope=None, damping=None):
        """Creates the variables and calls every update thunk once.

        `scope` and `damping` as in `make_vars_and_create_op_thunks`.

        Returns:
          `(cov_update_ops, cov_update_op, inv_update_ops, inv_update_op,
          cov_update_thunks, inv_update_thunks)`; the two grouped ops are named
          "cov_update_op" and "inv_update_op" inside `scope` (or the estimator
          name).
        """
        cov_update_thunks, inv_update_thunks = self.make_vars_and_create_op_thunks(
            scope=scope, damping=damping
        )
        cov_update_ops = [thunk() for thunk in cov_update_thunks]
        inv_update_ops = [thunk() for thunk in inv_update_thunks]
        with tf.variable_scope(self.name if scope is None else scope):
            cov_update_op = tf.group(cov_update_ops, name="cov_update_op")
            inv_update_op = tf.group(inv_update_ops, name="inv_update_op")
        return (
            cov_update_ops,
            cov_update_op,
            inv_update_ops,
            inv_update_op,
            cov_update_thunks,
            inv_update_thunks,
        )
