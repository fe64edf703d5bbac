"""What was registered for each parameter group: kind, approximation, towers.

`LayerCollection.layer_registrations` keeps one `LayerRegistration` per block
registered through a `register_*` method (blocks inserted directly with
`register_block` have none); a reuse adds a tower to the existing record.
The summary, the linter and the auto-registration tests read them.
"""

import dataclasses
from typing import Any
from typing import List


@dataclasses.dataclass(eq=False)
class LayerRegistration:
    """One registered layer (block).

    Attributes:
      kind: the layer kind ("fully_connected", "conv2d", "generic", ...).
      approximation: the approximation name that selected the block.
      params: the block's key (a variable or a tuple of them).
      towers: per tower, the arguments given to `register_additional_tower`
        (`(inputs, outputs)`, or `(batch_size,)` for generic blocks).
      uses: the uses counted per tower (`inf` for generic blocks).
      block: the block in effect.
    """

    kind: str
    approximation: str
    params: Any
    towers: List[tuple]
    uses: float
    block: Any

    @property
    def variables(self) -> tuple:
        return (
            tuple(self.params)
            if isinstance(self.params, (tuple, list))
            else (self.params,)
        )


def record_tower(records, kind, approximation, params, tower_args, uses, block) -> None:
    """Adds a tower to the record of `params`, making the record if needed.

    Args:
      records: the collection's `LayerParametersDict` of records.
    """
    if params in records:
        records[params].towers.append(tuple(tower_args))
        return
    records[params] = LayerRegistration(
        kind, approximation, params, [tuple(tower_args)], uses, block
    )
