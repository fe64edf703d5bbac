"""Global configuration of the Fisher blocks (the one place these constants live).

`kfac.ops.fisher_blocks` forwards reads and writes of `NORMALIZE_DAMPING_POWER`
and `PI_TYPE` to this module, so `fisher_blocks.PI_TYPE = "off"` and
`fisher_blocks.set_global_constants(pi_type="off")` both take effect. The values
are read when damping functions are evaluated, i.e. while inverse-update ops
are built.
"""

from typing import Optional

# Damping of a block whose parameters are used at `n` locations/uses is divided
# by `n ** NORMALIZE_DAMPING_POWER` before the pi split (0 turns this off).
NORMALIZE_DAMPING_POWER = 1.0

PI_OFF_NAME = "off"
PI_TRACENORM_NAME = "tracenorm"
PI_TYPES = (PI_OFF_NAME, PI_TRACENORM_NAME)

# How the damping of a Kronecker block is split between its two factors.
PI_TYPE = PI_TRACENORM_NAME


def set_global_constants(
    normalize_damping_power: Optional[float] = None, pi_type: Optional[str] = None
) -> None:
    """Overwrites the block constants whose argument is not None.

    Args:
        normalize_damping_power: new `NORMALIZE_DAMPING_POWER` (a number >= 0).
        pi_type: new `PI_TYPE`, `"tracenorm"` or `"off"`.

    Raises:
        ValueError: for a `pi_type` other than those two names.
    """
    global NORMALIZE_DAMPING_POWER, PI_TYPE
    if normalize_damping_power is not None:
        NORMALIZE_DAMPING_POWER = normalize_damping_power
    if pi_type is not None:
        if pi_type not in PI_TYPES:
            raise ValueError(
                "set_global_constants: pi_type must be one of %s, got %r."
                % (PI_TYPES, pi_type)
            )
        PI_TYPE = pi_type
