"""Automatic layer registration by graph scanning (kfac 0.2's `graph_search`).

`register_layers(layer_collection, varlist=None, batch_size=None)` is what
`LayerCollection.auto_register_layers` runs; see its docstring for the
patterns matched and the fallbacks.
"""

from kfac.ops._graph_search.scan import FALLBACK_APPROXIMATION  # noqa: F401
from kfac.ops._graph_search.scan import AmbiguousRegistrationError  # noqa: F401
from kfac.ops._graph_search.scan import Registration  # noqa: F401


def register_layers(layer_collection, varlist=None, batch_size=None) -> list:
    """Registers the unregistered layers of `layer_collection`'s graph.

    Same as `layer_collection.auto_register_layers(varlist, batch_size)`.
    """
    return layer_collection.auto_register_layers(varlist, batch_size)
