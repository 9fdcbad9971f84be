"""The layer order as import-linter contracts (pyproject [tool.importlinter], run by `make lint`).

They mirror tests/unit/test_layers.py (the ast-based check inside `make test`), so an IDE or CI
job that runs `lint-imports` reports an upward import the same way, indirect chains included.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.unit.test_layers import layer, modules

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts(path: Path = ROOT / "pyproject.toml") -> list[dict]:
    return tomllib.loads(path.read_text())["tool"]["importlinter"]["contracts"]


def test_the_library_contract_names_every_library_module():
    [forbidden] = [c for c in _contracts() if c["type"] == "forbidden"]
    library = sorted(m for m in modules() if layer(m) == "library")
    assert sorted(forbidden["source_modules"]) == library


@pytest.mark.tool  # runs lint-imports over the repository: make test-tools and make test
def test_the_package_keeps_its_contracts():
    out = subprocess.run([str(LINT_IMPORTS)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert out.stdout.count("KEPT") == len(_contracts()), out.stdout[-2000:]


def test_the_contracts_catch_upward_imports(tmp_path):
    """The same contracts on a small package with one upward import per kind."""
    pkg = tmp_path / "kfct"
    for sub in ("cli", "pipelines", "components", "serving"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text("import kfct.serving\n")  # library -> serving
    (pkg / "components" / "train.py").write_text("import kfct.pipelines\n")  # components -> pipelines
    (pkg / "serving" / "router.py").write_text("from kfct.components import train\n")  # serving -> components
    text = (ROOT / "pyproject.toml").read_text()
    section = text[text.index("[tool.importlinter]") : text.index("[tool.pytest.ini_options]")]
    start = section.index("source_modules = [")
    section = section[:start] + 'source_modules = ["kfct", "kfct.config"]\n' + section[section.index("forbidden_modules") :]
    (tmp_path / "pyproject.toml").write_text(section)
    out = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tmp_path / "pyproject.toml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]
    for line in (
        "kfct.config -> kfct.serving",
        "kfct.components.train -> kfct.pipelines",
        "kfct.serving.router -> kfct.components.train",
    ):
        assert line in out.stdout, out.stdout[-3000:]
