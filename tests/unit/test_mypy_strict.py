"""The layers above the library are checked by mypy's strict flags (pyproject.toml, issue 19).

Two halves: the override names every stage, serving and pipeline module the issue lists (and each
exists), and the flags it sets do catch what strict typing is for. The second half runs mypy with
that very flag set, applied to a planted module of its own, so it proves the flags, not a copy.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What issue 19 (finding 7) asks to bring under strict mypy.
REQUIRED = [
    "kfct.components.evaluate",
    "kfct.components.train",
    "kfct.components.rollout",
    "kfct.components.rollout_backends",
    "kfct.components.rollout_decision",
    "kfct.components.rollout_defer",
    "kfct.components.deploy",
    "kfct.components.ab_test",
    "kfct.components.featurize",
    "kfct.components.featurize_merge",
    "kfct.components.drift_detect",
    "kfct.components.drift_inputs",
    "kfct.components.drift_report",
    "kfct.components.score",
    "kfct.components.validation_datadocs",
    "kfct.components.validation_merge",
    "kfct.components.validation_plan",
    "kfct.components.validation_records",
    "kfct.components.validation_report",
    "kfct.components.validation_run",
    "kfct.serving.app",
    "kfct.serving.router",
    "kfct.serving.routing",
    "kfct.contracts.prediction_log",
    "kfct.evidence.modelcard",
    "kfct.pipelines.ct",
    "kfct.pipelines.batch_scoring",
    "kfct.pipelines.monitoring",
]
FLAGS = (
    "disallow_untyped_defs",
    "disallow_incomplete_defs",
    "disallow_untyped_calls",
    "disallow_any_generics",
    "warn_return_any",
    "strict_equality",
)

PLANTED = """\
from typing import Any


def untyped(x):
    return x


def bare(d: dict) -> list:
    return [d]


def loose(d: dict[str, Any]) -> int:
    return d["n"]


def calls() -> None:
    untyped(1)
"""


def _strict_override() -> dict:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = [o for o in cfg["tool"]["mypy"]["overrides"] if o.get("warn_return_any")]
    assert len(found) == 1, found
    return found[0]


def test_the_strict_override_names_every_module_the_issue_lists():
    strict = _strict_override()
    missing = sorted(set(REQUIRED) - set(strict["module"]))
    assert not missing, missing
    for module in strict["module"]:
        rel = module.removeprefix("kfct.").replace(".", "/")
        assert (ROOT / "kfct" / f"{rel}.py").is_file(), module
    assert all(strict.get(flag) is True for flag in FLAGS), strict


def test_the_strict_flags_catch_untyped_defs_bare_generics_any_returns_and_untyped_calls(tmp_path):
    strict = _strict_override()
    name = f"planted_{uuid.uuid4().hex}"  # a module name of its own: mypy's cache would replay another run
    (tmp_path / f"{name}.py").write_text(PLANTED)
    flags = "\n".join(f"{flag} = true" for flag in FLAGS if strict.get(flag))
    (tmp_path / "mypy.ini").write_text(f"[mypy]\npython_version = 3.11\n\n[mypy-{name}]\n{flags}\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "mypy.ini",
            "--no-error-summary",
            "--show-error-codes",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            f"{name}.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    codes = {(int(m.group(1)), m.group(2)) for m in re.finditer(r":(\d+): error: .*\[([a-z-]+)\]$", text, re.M)}
    assert (4, "no-untyped-def") in codes, text  # def untyped(x)
    assert (8, "type-arg") in codes, text  # dict / list without their arguments
    assert (13, "no-any-return") in codes, text  # returns d["n"] (Any) as int
    assert (17, "no-untyped-call") in codes, text  # a typed function calling an untyped one
