"""Import kserve without letting it read our command line.

`kserve.model_server` parses `sys.argv` with `parse_known_args` at import time
(and argparse accepts abbreviations, so `kfct serve --model X` would become
kserve's `--model_name`). Every serving module imports kserve through here.
"""

from __future__ import annotations

import sys


def load():
    if "kserve.model_server" not in sys.modules:
        saved = sys.argv
        sys.argv = [saved[0] if saved else "kfct"]
        try:
            import kserve.model_server  # noqa: F401
        finally:
            sys.argv = saved
    import kserve

    return kserve
