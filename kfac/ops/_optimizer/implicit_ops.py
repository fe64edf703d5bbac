"""The deprecated implicit op creation of `KfacOptimizer` (API.md §8).

The original optimizer made the estimator's ops on the first `minimize`,
`apply_gradients` or convenience property (`cov_update_op`, ...) and cached
the six results; this keeps that behaviour, with a `DeprecationWarning`.
"""

import warnings
from typing import Any
from typing import Callable
from typing import Tuple

DEPRECATION = (
    "The KfacOptimizer convenience properties (cov_update_op, inv_update_op, ...) "
    "and the implicit op creation in minimize/apply_gradients will be deprecated "
    "soon. Please use explicit op/thunk creation methods instead (e.g. "
    "make_ops_and_vars, make_vars_and_create_op_thunks).")

# The order of `FisherEstimator.make_ops_and_vars`'s results.
NAMES = ("cov_update_ops", "cov_update_op", "inv_update_ops", "inv_update_op",
         "cov_update_thunks", "inv_update_thunks")


class ImplicitOps(object):
    """The six cached results of the first implicit `make_ops_and_vars`.

    Args:
      made_vars: `() -> bool`, whether the estimator's variables exist.
      make_ops_and_vars: `() -> 6-tuple` in the order of `NAMES`.
    """

    def __init__(self, made_vars: Callable[[], bool],
                 make_ops_and_vars: Callable[[], Tuple[Any, ...]]) -> None:
        self._made_vars = made_vars
        self._make_ops_and_vars = make_ops_and_vars
        self._cache = None

    def make_once(self, stacklevel: int = 3) -> None:
        """Makes and caches the ops unless the estimator's variables exist; the
        warning points `stacklevel` frames up (2: the caller of this method)."""
        if not self._made_vars():
            warnings.warn(DEPRECATION, DeprecationWarning, stacklevel=stacklevel)
            self._cache = dict(zip(NAMES, self._make_ops_and_vars()))

    def get(self, name: str) -> Any:
        """The cached result `name` (one of `NAMES`), making the ops if needed.

        Raises:
          AttributeError: if the ops were made by an explicit method.
        """
        self.make_once(stacklevel=4)
        if self._cache is None:
            raise AttributeError(
                "KfacOptimizer.{} is not available: the optimizer's ops were made "
                "through an explicit method (make_ops_and_vars, "
                "make_vars_and_create_op_thunks or create_ops_and_vars_thunks); use "
                "the ops or thunks that call returned.".format(name))
        return self._cache[name]
