"""The layers point down only, and importing a module does no heavy work.

    cli  ->  pipelines  ->  components  ->  serving  ->  library (the rest of kfct.*)

Components do not use the model server either: what they share with it (split state,
window stats, prediction-log layout) is in the library layer.

Every `import` in the package (module level or inside a function) is read with `ast`
and checked against that order; then each module is imported in a fresh interpreter
and the heavy libraries it pulled in are compared with what it may pull in.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"kfct": "kfct", "components": "kfct.components", "pipelines": "kfct.pipelines", "serving": "kfct.serving"}
# Which layers each layer may import.
ALLOWED = {"library": {"library"},
           "serving": {"serving", "library"},
           "components": {"components", "library"},
           "pipelines": {"pipelines", "components", "serving", "library"},
           "cli": {"cli", "pipelines", "components", "serving", "library"}}
HEAVY = ("kserve", "mlflow", "great_expectations", "evidently", "xgboost", "sklearn")

# What importing a module may import among HEAVY, and why; everything else: none of them.
MAY_IMPORT = {
    # the model object and the fitted encoder are scikit-learn estimators (pickled inside the MLflow model)
    "kfct.model": {"sklearn"},
}


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if folder == "kfct" and parts and parts[0] in ("components", "pipelines", "serving"):
                continue  # not a source of these packages (package-dir maps them from the top level)
            out[name] = path
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("cli", "__main__"):
        return "cli"
    if len(parts) > 1 and parts[1] in ("pipelines", "components", "serving"):
        return parts[1]
    return "library"


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported kfct module) for every import statement, at any depth."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from kfct import cli` imports a module: judge each name under its module
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name == "kfct" or name.startswith("kfct.")]


def upward_imports() -> list[str]:
    bad = []
    for module, path in modules().items():
        allowed = ALLOWED[layer(module)]
        for line, target in imports(module, path):
            if layer(target) not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({layer(module)}) imports {target} ({layer(target)})")
    return bad


def test_the_import_graph_finds_imports_inside_functions(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from kfct.pipelines.local import run_ct\n    from . import launcher\n")
    assert imports("kfct.components.m", src) == [(2, "kfct.pipelines.local.run_ct"),
                                                (3, "kfct.components.launcher")]
    assert layer("kfct.pipelines.local") == "pipelines" and layer("kfct.split_state") == "library"
    assert layer("kfct.cli.run") == "cli" and layer("kfct.__main__") == "cli"


def test_layers_point_down_only():
    bad = upward_imports()
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_nothing_imports_the_cli():
    users = [f"{m}:{line}" for m, p in modules().items() if layer(m) != "cli"
             for line, t in imports(m, p) if layer(t) == "cli"]
    assert not users, users


PROBE = ("import json, sys\n"
         "import {m}\n"
         "print(json.dumps(sorted({{k.split('.')[0] for k in sys.modules}} & set({heavy!r}))))")


def _heavy_after_import(module: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(m=module, heavy=HEAVY)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"import {module} failed: {out.stderr.strip().splitlines()[-1:]}"
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_a_module_does_not_import_heavy_libraries():
    names = [m for m in modules() if m != "kfct.__main__"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        loaded = dict(zip(names, pool.map(_heavy_after_import, names)))
    bad = [f"{m} imports {sorted(h - MAY_IMPORT.get(m, set()))} at import time" for m, h in sorted(loaded.items())
           if h - MAY_IMPORT.get(m, set())]
    assert not bad, "\n".join(bad)
