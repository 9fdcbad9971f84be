"""One installed namespace: `pip install kfct` puts only `kfct` into site-packages.

The product card's folders (components/, pipelines/, serving/) are reached as
`kfct.components`, `kfct.pipelines`, `kfct.serving` through the symlinks kfct/components ->
../components etc. (so mypy and IDEs resolve them too); no code may import them under their
bare, generic names.
"""

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERIC = {"components", "pipelines", "serving"}
CODE = ("kfct", "components", "pipelines", "serving", "bench", "tests")


def test_every_installed_package_is_under_kfct():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p == "kfct" or p.startswith("kfct.") for p in tool["packages"]), tool["packages"]
    assert "package-dir" not in tool, "the symlinks under kfct/ do the mapping"
    for name in GENERIC:
        assert f"kfct.{name}" in tool["packages"]
        assert (ROOT / "kfct" / name).resolve() == (ROOT / name).resolve()


def test_no_code_imports_a_generic_top_level_name():
    offenders = []
    for folder in CODE:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in GENERIC]
    assert not offenders, "import through kfct.…: " + ", ".join(offenders)


def test_the_mapped_packages_import_from_the_kfct_namespace():
    import kfct.components.train
    import kfct.pipelines.ct
    import kfct.serving.router

    assert Path(kfct.components.train.__file__).resolve() == ROOT / "components" / "train.py"
    assert Path(kfct.pipelines.ct.__file__).resolve() == ROOT / "pipelines" / "ct.py"
    assert Path(kfct.serving.router.__file__).resolve() == ROOT / "serving" / "router.py"
