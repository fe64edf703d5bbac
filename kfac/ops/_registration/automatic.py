"""`LayerCollection.auto_register_layers` and `finalize` (kfac 0.2's API).

A mixin of `LayerCollection`; the scan itself is `kfac/ops/_graph_search/`.
"""

from kfac.ops._graph_search import scan as graph_scan


class AutomaticRegistration(object):
    """Registration by graph scanning, and closing a collection to registrations."""

    _finalized = False

    def auto_register_layers(self, var_list=None, batch_size=None) -> list:
        """Registers the layers of the graph that no registration covers yet.

        Scans the graph backwards from the registered losses (register them
        first) and registers each trainable variable it can match: dense
        (`MatMul`, `BatchMatMul`, with a `BiasAdd`/`Add` bias `[out]` or `[1,
        out]`), `conv1d`/`conv2d`/`conv3d` (strides, padding and dilations
        read from the op), depthwise and separable convolutions, embeddings
        (`Gather`/`ResourceGather`), and the scale and shift of batch norm
        (fused and unfused) and layer norm. A weight used several times per
        tower gets the `*_multi` registration, and the towers of a multi-tower
        model are registered as towers. Variables it cannot match get a
        "diagonal" generic block (the linked approximation if they were
        linked) and a warning on the "kfac.auto_register" logger naming each
        one and the op that uses it. Hand registrations made before are kept.

        Args:
          var_list: the variables to register (default: the graph's trainable
            variables); ones that the losses do not use are skipped.
          batch_size: per-tower batch size of generic fallbacks (default: the
            first dimension of the tower's first loss input).

        Returns:
          One `Registration` per registered parameter group (kind, patterns,
          uses, towers, and the reason of a fallback).

        Raises:
          ValueError: no loss is registered, or the collection is finalized.
          AmbiguousRegistrationError: a variable matches incompatible patterns
            (e.g. a bias added after two layers).
        """
        self._check_not_finalized("auto-register layers")
        return graph_scan.register_layers(self, var_list, batch_size)

    def finalize(self) -> None:
        """Blocks later registrations (layers, losses, links): they raise ValueError."""
        self._finalized = True

    @property
    def is_finalized(self) -> bool:
        return self._finalized

    def _check_not_finalized(self, action: str) -> None:
        if self._finalized:
            raise ValueError(
                "LayerCollection {!r} is finalized: cannot {} after finalize() "
                "was called.".format(self._var_scope, action)
            )
