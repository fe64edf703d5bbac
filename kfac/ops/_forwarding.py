"""Module constants that live in one private config module.

The original exposes tunables as module globals (`fisher_factors.TOWER_STRATEGY`,
`fisher_blocks.PI_TYPE`). Here each lives in one private `config` module that the
library reads at op-building time; the public module forwards reads, writes and
deletes (`mock.patch.object` deletes then restores) of those names to it.
"""

import sys
import types


def forward_constants(module_name, config_module, names):
    """Makes `sys.modules[module_name]` forward `names` to `config_module`."""
    names = frozenset(names)

    class ConfigForwardingModule(types.ModuleType):
        # Names `del`-eted from the module; restored by the next assignment.
        _hidden = set()

        def __getattr__(self, name):
            if name in names and name not in self._hidden:
                return getattr(config_module, name)
            raise AttributeError("module %r has no attribute %r" % (module_name, name))

        def __setattr__(self, name, value):
            if name in names:
                self._hidden.discard(name)
                setattr(config_module, name, value)
            else:
                super().__setattr__(name, value)

        def __delattr__(self, name):
            if name in names:
                self._hidden.add(name)
            else:
                super().__delattr__(name)

        def __dir__(self):
            return sorted(set(super().__dir__()) | names)

    sys.modules[module_name].__class__ = ConfigForwardingModule
