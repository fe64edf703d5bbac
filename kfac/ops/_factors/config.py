"""Module constants of `fisher_factors` and their single storage place.

The original kept these as mutable module globals. They live here once;
`kfac.ops.fisher_factors` forwards attribute reads (and writes) to this module,
and `kfac.ops.fisher_blocks` reads `TOWER_STRATEGY` from here too. Factor code
reads each constant once, when it builds ops, and passes the value down.
"""

from typing import Optional

# Initial covariance: identity (dense) / ones (diagonal) when False, zeros when True.
INIT_COVARIANCES_AT_ZERO = False

# Passed as `zero_debias` to the covariance moving-average update.
ZERO_DEBIAS = False

# When the number of registered inverses (exp = -1) on one factor reaches this
# value, all matrix powers of that factor come from one eigendecomposition.
EIGENVALUE_DECOMPOSITION_THRESHOLD = 2

# Eigenvalues of a covariance estimate are clipped from below to this value
# before they are used for inverses or matrix powers. Must be nonnegative.
EIGENVALUE_CLIPPING_THRESHOLD = 0.0

# "concat": towers are merged into one PartitionedTensor before a factor sees
# them; "separate": a factor gets a tuple over towers, computes each statistic
# on that tower's device and averages them.
TOWER_STRATEGY = "concat"

TOWER_STRATEGIES = ("concat", "separate")

CONSTANT_NAMES = (
    "INIT_COVARIANCES_AT_ZERO",
    "ZERO_DEBIAS",
    "EIGENVALUE_DECOMPOSITION_THRESHOLD",
    "EIGENVALUE_CLIPPING_THRESHOLD",
    "TOWER_STRATEGY",
)


def set_global_constants(
    init_covariances_at_zero: Optional[bool] = None,
    zero_debias: Optional[bool] = None,
    eigenvalue_decomposition_threshold: Optional[int] = None,
    eigenvalue_clipping_threshold: Optional[float] = None,
    tower_strategy: Optional[str] = None,
) -> None:
    """Overwrites each constant whose argument is not None.

    The constants are read when ops are built, so set them before building.
    `tower_strategy` is not validated here (the original accepted anything);
    an unknown strategy raises a ValueError when a factor or block uses it.
    """
    global INIT_COVARIANCES_AT_ZERO, ZERO_DEBIAS
    global EIGENVALUE_DECOMPOSITION_THRESHOLD, EIGENVALUE_CLIPPING_THRESHOLD
    global TOWER_STRATEGY
    if init_covariances_at_zero is not None:
        INIT_COVARIANCES_AT_ZERO = init_covariances_at_zero
    if zero_debias is not None:
        ZERO_DEBIAS = zero_debias
    if eigenvalue_decomposition_threshold is not None:
        EIGENVALUE_DECOMPOSITION_THRESHOLD = eigenvalue_decomposition_threshold
    if eigenvalue_clipping_threshold is not None:
        EIGENVALUE_CLIPPING_THRESHOLD = eigenvalue_clipping_threshold
    if tower_strategy is not None:
        TOWER_STRATEGY = tower_strategy


def checked_tower_strategy() -> str:
    """The current `TOWER_STRATEGY`, or ValueError when it is not a known one."""
    if TOWER_STRATEGY not in TOWER_STRATEGIES:
        raise ValueError(
            "fisher_factors.TOWER_STRATEGY must be one of %s, got %r."
            % (TOWER_STRATEGIES, TOWER_STRATEGY)
        )
    return TOWER_STRATEGY
