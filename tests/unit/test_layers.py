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
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"kfct": "kfct", "components": "kfct.components", "pipelines": "kfct.pipelines", "serving": "kfct.serving"}
# Which layers each layer may import.
ALLOWED = {
    "library": {"library"},
    "serving": {"serving", "library"},
    "components": {"components", "library"},
    "pipelines": {"pipelines", "components", "serving", "library"},
    "cli": {"cli", "pipelines", "components", "serving", "library"},
}
HEAVY = ("kserve", "mlflow", "great_expectations", "evidently", "xgboost", "sklearn")

# What importing a module may import among HEAVY, and why; everything else: none of them.
MAY_IMPORT = {
    # the model object and the fitted encoder are scikit-learn estimators (pickled inside the MLflow model)
    "kfct.evidence.model": {"sklearn"},
}


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if folder == "kfct" and parts and parts[0] in ("components", "pipelines", "serving"):
                continue  # the symlinks kfct/components etc.: read once, from the top-level folder
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
    assert imports("kfct.components.m", src) == [(2, "kfct.pipelines.local.run_ct"), (3, "kfct.components.launcher")]
    assert layer("kfct.pipelines.local") == "pipelines" and layer("kfct.contracts.split_state") == "library"
    assert layer("kfct.cli.run") == "cli" and layer("kfct.__main__") == "cli"


def test_layers_point_down_only():
    bad = upward_imports()
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_nothing_imports_the_cli():
    users = [f"{m}:{line}" for m, p in modules().items() if layer(m) != "cli" for line, t in imports(m, p) if layer(t) == "cli"]
    assert not users, users


# One interpreter imports what every module may load anyway (none of HEAVY), then forks a
# child per module: each child starts from that state, imports its module and reports.
PROBE = r"""
import importlib, json, os, sys
for light in ("numpy", "pandas", "pydantic", "pydantic_settings", "yaml", "kfp.dsl"):
    importlib.import_module(light)
heavy = set(sys.argv[1].split(","))
already = sorted({k.split(".")[0] for k in sys.modules} & heavy)
out = {"__preloaded__": already}
for name in sys.argv[2:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            msg = sorted({k.split(".")[0] for k in sys.modules} & heavy)
        except BaseException as exc:
            msg = f"import failed: {type(exc).__name__}: {exc}"
        os.write(w, json.dumps(msg).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    out[name] = json.loads(data)
print(json.dumps(out))
"""


def heavy_after_import(names: list[str]) -> dict[str, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(HEAVY), *names], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result.pop("__preloaded__") == [], "the probe itself loaded a heavy library"
    failed = {m: r for m, r in result.items() if isinstance(r, str)}
    assert not failed, failed
    return {m: set(r) for m, r in result.items()}


@pytest.mark.slow  # probes imports in a fresh Python process
def test_importing_a_module_does_not_import_heavy_libraries():
    loaded = heavy_after_import([m for m in modules() if m != "kfct.__main__"])
    bad = [
        f"{m} imports {sorted(h - MAY_IMPORT.get(m, set()))} at import time"
        for m, h in sorted(loaded.items())
        if h - MAY_IMPORT.get(m, set())
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.slow  # probes imports in a fresh Python process
def test_the_probe_sees_a_heavy_import():
    assert heavy_after_import(["kfct.evidence.model", "kfct.contracts.split_state"]) == {
        "kfct.evidence.model": {"sklearn"},
        "kfct.contracts.split_state": set(),
    }


def _unresolved(node: ast.AST) -> list[str]:
    """The names a `from kfct.x import y` / `import kfct.x` node imports that do not exist."""
    import importlib

    out = []
    if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("kfct"):
        target = importlib.import_module(node.module)
        for alias in node.names:
            if not hasattr(target, alias.name):
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    out.append(f"{node.module}.{alias.name}")
    elif isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.startswith("kfct"):
                try:
                    importlib.import_module(alias.name)
                except ImportError:
                    out.append(alias.name)
    return out


def test_every_kfct_import_names_something_that_exists():
    """`from kfct.x import y` anywhere in the package (inside functions too) resolves: a moved
    contract leaves no caller behind (mypy checks this too, `make lint`; this holds without it)."""
    missing = []
    for path in modules().values():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            missing += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in _unresolved(node)]
    assert not missing, missing


# `kfct --help` (and a subcommand's) builds the whole parser: every command module's add_commands.
CLI_HELP_PROBE = r"""
import contextlib, io, json, sys
from kfct.cli import main
for argv in (["--help"], ["data", "generate", "--help"], ["serve", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
print(json.dumps(sorted({k.split(".")[0] for k in sys.modules})))
"""
CLI_MAY_NOT_IMPORT = set(HEAVY) | {"pandas", "numpy", "pyarrow", "kfp"}


@pytest.mark.slow  # probes imports in a fresh Python process
def test_cli_help_imports_no_data_or_ml_library():
    """The parser is built before any command runs, so what it imports every `kfct ...` pays for,
    `--help` included; the libraries a command needs are imported by that command's handler."""
    out = subprocess.run([sys.executable, "-c", CLI_HELP_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1])) & CLI_MAY_NOT_IMPORT
    assert not loaded, f"building the CLI's parser imports {sorted(loaded)}"
