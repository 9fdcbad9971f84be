"""One installed namespace: `pip install kfct` puts only `kfct` into site-packages.

The product card's folders (components/, pipelines/, serving/) are mapped into
`kfct.components`, `kfct.pipelines`, `kfct.serving` by setuptools' package-dir; no
code may import them under their bare, generic names.
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
    for name in GENERIC:
        assert tool["package-dir"][f"kfct.{name}"] == name


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
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                              if n.split(".")[0] in GENERIC]
    assert not offenders, "import through kfct.…: " + ", ".join(offenders)


def test_the_mapped_packages_import_from_the_kfct_namespace():
    import kfct.components.train
    import kfct.pipelines.ct
    import kfct.serving.router

    assert Path(kfct.components.train.__file__).parent.name == "components"
    assert Path(kfct.pipelines.ct.__file__).parent.name == "pipelines"
    assert Path(kfct.serving.router.__file__).parent.name == "serving"
