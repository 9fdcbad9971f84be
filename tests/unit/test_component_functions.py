"""A kfp component runs its function's source on its own, without the rest of its module:
every name it uses must be a builtin or imported inside the function."""

from __future__ import annotations

import builtins
import dis
import types


def _global_names(code: types.CodeType) -> set[str]:
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _functions():
    from kfct.pipelines.ct import make_components
    from kfct.pipelines.monitoring import make_components as monitoring_components

    comps = {**make_components(), **monitoring_components()}
    return {name: c.python_func for name, c in comps.items()}


def test_component_functions_use_only_what_they_import():
    bad = {name: sorted(n for n in _global_names(fn.__code__) if not hasattr(builtins, n)) for name, fn in _functions().items()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"component functions use module-level names they do not import: {bad}"


def test_the_check_sees_a_module_level_name():
    ns: dict = {}
    exec("import tempfile\ndef stage():\n    import json\n    return json.dumps(tempfile.gettempdir())\n", ns)
    assert _global_names(ns["stage"].__code__) == {"tempfile"}
