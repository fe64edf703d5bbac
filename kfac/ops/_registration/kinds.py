"""The layer kinds whose approximation a `LayerCollection` chooses.

Each collection starts from the kinds' `default`s; `set_default_*` changes
them for that collection only. The convolution and depthwise kinds have one
block class each (`LayerKind.fixed`), so they are not listed here.
"""

from kfac.ops._registration.conv2d import CONV2D
from kfac.ops._registration.conv2d import CONV2D_MULTI
from kfac.ops._registration.embedding import EMBEDDING
from kfac.ops._registration.embedding import EMBEDDING_MULTI
from kfac.ops._registration.fully_connected import FULLY_CONNECTED
from kfac.ops._registration.fully_connected import FULLY_CONNECTED_MULTI
from kfac.ops._registration.generic import GENERIC
from kfac.ops._registration.scale_and_shift import SCALE_AND_SHIFT

# kind name -> LayerKind, in the original's order.
LAYER_KINDS = {
    kind.name: kind
    for kind in (
        GENERIC,
        FULLY_CONNECTED,
        CONV2D,
        EMBEDDING,
        FULLY_CONNECTED_MULTI,
        CONV2D_MULTI,
        EMBEDDING_MULTI,
        SCALE_AND_SHIFT,
    )
}
