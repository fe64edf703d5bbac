"""The settings a `LayerCollection` builds its factors and blocks with.

The original changed behaviour through module globals (`fisher_factors.TOWER_STRATEGY`,
`fisher_blocks.PI_TYPE`, `utils.POSDEF_INV_METHOD`), read whenever an op happened
to be built. Here they are one frozen `KfacConfig`, taken once when a
`LayerCollection` is made and handed to what it builds:

    registration (LayerCollection) → FactorCache → factors, blocks

The public modules keep their constants and `set_global_constants` for
compatibility; they are the *defaults*: each public module declares which of its
globals hold which field (`declare_defaults`), and `KfacConfig.from_defaults()`
reads them at that one point. Changing a constant therefore affects collections
(and stand-alone factors and blocks) made afterwards, never existing ones.
"""

import contextlib
import dataclasses
import threading
from typing import Dict
from typing import Iterator

TOWER_STRATEGIES = ("concat", "separate")
PI_OFF_NAME = "off"
PI_TRACENORM_NAME = "tracenorm"
PI_TYPES = (PI_OFF_NAME, PI_TRACENORM_NAME)


@dataclasses.dataclass(frozen=True)
class KfacConfig:
    """Settings of the factors and blocks of one `LayerCollection`.

    Attributes:
        init_covariances_at_zero: initial covariance zeros (True) or the
            identity / ones of a diagonal (False).
        zero_debias: zero-debias the covariances' moving averages.
        eigenvalue_decomposition_threshold: from this many registered inverses
            of one factor on, all its powers come from one eigendecomposition.
        eigenvalue_clipping_threshold: eigenvalues are clipped from below to
            this before they are used.
        tower_strategy: "concat" (towers merged before a factor sees them) or
            "separate" (per-tower statistics, averaged).
        normalize_damping_power: a block used at `n` locations/uses divides its
            damping by `n ** normalize_damping_power` before the pi split.
        pi_type: how a Kronecker block splits its damping, "tracenorm" or "off".
        posdef_inv_method: the `utils.posdef_inv_functions` key used for damped
            inverses.
        posdef_eig_method: the `utils.posdef_eig_functions` key used for the
            eigendecompositions of multi-use factors.
        sub_sample_inputs: a convolution's input factor reads the patches of
            a random `inputs_to_extract_patches_factor` of the batch's
            examples (at least one) instead of all of them.
        sub_sample_patches: a convolution's input factor averages over at
            most `max_num_patches_per_dimension · d` patches drawn at random
            without replacement (`d` the patch size, bias coordinate
            included), instead of all `B·T`.
        inputs_to_extract_patches_factor: in (0, 1], see `sub_sample_inputs`.
        max_num_patches_per_dimension: > 0, see `sub_sample_patches`.
    """

    init_covariances_at_zero: bool = False
    zero_debias: bool = False
    eigenvalue_decomposition_threshold: int = 2
    eigenvalue_clipping_threshold: float = 0.0
    tower_strategy: str = "concat"
    normalize_damping_power: float = 1.0
    pi_type: str = PI_TRACENORM_NAME
    posdef_inv_method: str = "cholesky"
    posdef_eig_method: str = "self_adjoint"
    sub_sample_inputs: bool = False
    sub_sample_patches: bool = False
    inputs_to_extract_patches_factor: float = 0.5
    max_num_patches_per_dimension: float = 3.0

    def __post_init__(self):
        fraction = self.inputs_to_extract_patches_factor
        if isinstance(fraction, bool) or not 0.0 < fraction <= 1.0:
            raise ValueError(
                "inputs_to_extract_patches_factor must be in (0, 1], got %r."
                % (fraction,)
            )
        per_dimension = self.max_num_patches_per_dimension
        if isinstance(per_dimension, bool) or not per_dimension > 0.0:
            raise ValueError(
                "max_num_patches_per_dimension must be positive, got %r."
                % (per_dimension,)
            )

    @classmethod
    def from_defaults(cls) -> "KfacConfig":
        """The configuration the public modules' constants describe right now."""
        values = {}
        for module, names in _DEFAULT_SOURCES:
            for field, global_name in names.items():
                if hasattr(module, global_name):
                    values[field] = getattr(module, global_name)
        return cls(**values)

    def replace(self, **changes) -> "KfacConfig":
        """A copy with `changes` applied (fields by name)."""
        return dataclasses.replace(self, **changes)

    def checked_tower_strategy(self) -> str:
        """`tower_strategy`, or ValueError when it is not a known one.

        Checked where it is used: the original accepted any value when set.
        """
        if self.tower_strategy not in TOWER_STRATEGIES:
            raise ValueError(
                "fisher_factors.TOWER_STRATEGY must be one of %s, got %r."
                % (TOWER_STRATEGIES, self.tower_strategy)
            )
        return self.tower_strategy


# (module, {field: global name}) pairs, declared by the public modules.
_DEFAULT_SOURCES = []


def declare_defaults(module, names: Dict[str, str]) -> None:
    """Makes `module.<global name>` the default of each `KfacConfig` field named.

    Called by the public modules that own the original's constants, so that
    assigning, patching or `set_global_constants` of those plain globals changes
    the defaults, read by `KfacConfig.from_defaults()`.
    """
    unknown = set(names) - {field.name for field in dataclasses.fields(KfacConfig)}
    if unknown:
        raise ValueError("declare_defaults: unknown fields %s." % sorted(unknown))
    _DEFAULT_SOURCES.append((module, dict(names)))


_building = threading.local()


@contextlib.contextmanager
def building_with(config: KfacConfig) -> Iterator[None]:
    """Within the block, `current()` is `config` (a factor cache builds factors so).

    Factor classes keep the original's constructor signatures, so the cache
    cannot pass the configuration as an argument; it scopes it instead, as it
    scopes the factors' variable names.
    """
    stack = _building.__dict__.setdefault("stack", [])
    stack.append(config)
    try:
        yield
    finally:
        stack.pop()


def current() -> KfacConfig:
    """The configuration being built with, else the defaults (read now)."""
    stack = getattr(_building, "stack", None)
    if stack:
        return stack[-1]
    return KfacConfig.from_defaults()
