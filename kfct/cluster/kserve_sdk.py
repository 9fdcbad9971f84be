"""Import kserve without letting it read our command line, and only when it is used.

`kserve.model_server` parses `sys.argv` with `parse_known_args` at import time (and
argparse accepts abbreviations, so `kfct serve --model X` would become kserve's
`--model_name`); `import kserve` imports it. Every kfct module that uses the kserve
SDK (the model server, the deploy stage's InferenceService objects) imports it
through `load()`.

Importing kserve takes seconds, so nothing does it at import time: `LazyKServe`
stands for the module until an attribute is used, and `subclass` builds a class
derived from a kserve class on first use (a module's PEP 562 `__getattr__` calls it).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


def load() -> Any:
    """The kserve module, imported with a neutral `sys.argv`."""
    if "kserve.model_server" not in sys.modules:
        saved = sys.argv
        sys.argv = [saved[0] if saved else "kfct"]
        try:
            import kserve.model_server
        finally:
            sys.argv = saved
    import kserve

    return kserve


class LazyKServe:
    """`kserve.X` that imports kserve (through `load`) the first time an attribute is read."""

    def __getattr__(self, name: str) -> Any:
        return getattr(load(), name)


def subclass(namespace: dict, name: str, body: type, base: str) -> type:
    """`name`, a class with `body`'s methods on top of kserve's `base` ('module:Class'), built once.

    The class is stored in `namespace` (the defining module's globals), so every later
    lookup, `isinstance` check and `from module import name` gets the same object.
    """
    cls = namespace.get(name)
    if cls is None:
        load()
        module, _, attr = base.partition(":")
        parent = getattr(importlib.import_module(module), attr)
        cls = type(name, (body, parent), {"__module__": body.__module__, "__qualname__": name, "__doc__": body.__doc__})
        namespace[name] = cls
    return cls
