"""The Dockerfiles, checked without a Docker engine.

Parsed instruction by instruction: base images, stages and targets, the non-root user
of every final image, that dependencies are installed (from pyproject + the lock)
before any code is copied, that every COPY source exists and survives .dockerignore,
and that the ENTRYPOINT/CMD modules import.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("kfct", "components", "pipelines", "serving")


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) with continuation lines joined and comments dropped."""
    logical, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, f"{path.name}: dangling line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op = op.upper()
        rest = rest.strip()
        if op == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v
            continue
        if op == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(name, base))
            continue
        assert stages, f"{path.name}: {op} before FROM"
        stages[-1].instructions.append((op, rest))
    return args, stages


def chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in stages if s.name}
    out = [stage]
    while out[-1].base in by_name:
        out.append(by_name[out[-1].base])
    return out


def effective_user(stages, stage) -> str | None:
    for s in chain(stages, stage):
        users = [rest for op, rest in s.instructions if op == "USER"]
        if users:
            return users[-1]
    return None


def exec_form(stages, stage, op) -> list[str] | None:
    for s in chain(stages, stage):
        found = [rest for o, rest in s.instructions if o == op]
        if found:
            value = found[-1]
            return json.loads(value) if value.startswith("[") else shlex.split(value)
    return None


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.lstrip("/")
        if (
            fnmatch.fnmatch(rel, p)
            or fnmatch.fnmatch(rel.split("/")[0], p)
            or (p.startswith("**/") and fnmatch.fnmatch(Path(rel).name, p[3:]))
        ):
            result = not neg
    return result


def assert_module_runs(argv: list[str]) -> None:
    """`python -m MOD` or `python -c CODE`: the module / every import must resolve here."""
    assert argv and Path(argv[0]).name.startswith("python"), argv
    if argv[1] == "-m":
        mod = argv[2]
        spec = importlib.util.find_spec(mod)
        assert spec is not None, f"module {mod} not importable"
        if spec.submodule_search_locations is not None:  # a package: needs __main__
            assert importlib.util.find_spec(f"{mod}.__main__") is not None, f"package {mod} has no __main__"
    elif argv[1] == "-c":
        tree = ast.parse(argv[2])
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        assert names, "python -c without imports checks nothing"
        for name in names:
            assert importlib.util.find_spec(name) is not None, f"{name} not importable"
    else:
        pytest.fail(f"unexpected python invocation {argv}")


@pytest.fixture(scope="module")
def cpu():
    return parse_dockerfile(ROOT / "Dockerfile")


@pytest.fixture(scope="module")
def gpu():
    return parse_dockerfile(ROOT / "Dockerfile.gpu")


def test_cpu_dockerfile_targets_bases_and_users(cpu):
    _, stages = cpu
    by_name = {s.name: s for s in stages}
    assert {"component", "serving"} <= set(by_name)
    assert len(stages) >= 3, "multi-stage: dependencies / build / runtime"
    for target in ("component", "serving"):
        st = by_name[target]
        root_base = chain(stages, st)[-1].base
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", root_base), root_base
        user = effective_user(stages, st)
        assert user is not None and user.split(":")[0] not in ("0", "root"), f"{target} runs as root"
    # runtime images do not inherit the build toolchain: they copy the venv from a build stage
    runtime = chain(stages, by_name["component"])
    copies = [rest for s in runtime for op, rest in s.instructions if op == "COPY" and "--from=" in rest]
    assert copies, "runtime should COPY --from a build stage"


def test_gpu_dockerfile_cuda_runtime_base_and_non_root(gpu):
    _args, stages = gpu
    final = stages[-1]
    root_base = chain(stages, final)[-1].base
    assert re.fullmatch(r"nvidia/cuda:12\.\d+(\.\d+)?-(cudnn\d*-)?runtime-ubuntu\d\d\.\d\d", root_base), root_base
    user = effective_user(stages, final)
    assert user is not None and user.split(":")[0] not in ("0", "root")
    runs = " ".join(rest for s in stages for op, rest in s.instructions if op == "RUN")
    assert "python3.11" in runs and "python3.11 -m venv" in runs


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dependencies_installed_before_code_is_copied(name):
    _, stages = parse_dockerfile(ROOT / name)
    seen_install = False
    for s in stages:
        for op, rest in s.instructions:
            if op == "RUN" and "pip install -r" in rest:
                assert "-c requirements.lock" in rest, "dependency install must use the lock as constraints"
                seen_install = True
            if op == "COPY" and "--from" not in rest:
                srcs = shlex.split(rest)[:-1]
                if any(src.rstrip("/") in CODE_DIRS for src in srcs):
                    assert seen_install, f"{name}: code copied before dependencies are installed ({rest})"
    assert seen_install


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dependency_set_is_what_pyproject_and_lock_pin(name):
    """Run the Dockerfile's own extraction snippet on our pyproject; every pin must match the lock."""
    _, stages = parse_dockerfile(ROOT / name)
    run = next(rest for s in stages for op, rest in s.instructions if op == "RUN" and "tomllib" in rest)
    snippet = shlex.split(run.split(">")[0])[2]  # python -c "<snippet>"
    import contextlib
    import io
    import os

    buf = io.StringIO()
    cwd = Path.cwd()
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(buf):
            exec(compile(snippet, "<dockerfile>", "exec"), {})
    finally:
        os.chdir(cwd)
    deps = [ln for ln in buf.getvalue().splitlines() if ln]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # the runtime dependencies plus the `tune` extra (tune_trials is a pipeline parameter)
    assert deps == project["dependencies"] + project["optional-dependencies"]["tune"]
    lock = {}
    for ln in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in ln and not ln.startswith("#"):
            k, v = ln.split("==")
            lock[k.strip().lower().replace("_", "-")] = v.strip()
    for dep in [*deps, "boto3"]:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[.*\])?(?:==(.+))?", dep)
        key = m.group(1).lower().replace("_", "-")
        assert key in lock, f"{dep} not in requirements.lock"
        if m.group(2):
            assert lock[key] == m.group(2), f"{dep}: lock pins {lock[key]}"


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_copy_sources_exist_and_are_not_dockerignored(name):
    _, stages = parse_dockerfile(ROOT / name)
    names = {s.name for s in stages if s.name}
    patterns = dockerignore_patterns()
    n = 0
    for s in stages:
        for op, rest in s.instructions:
            if op not in ("COPY", "ADD"):
                continue
            tokens = shlex.split(rest)
            flags = [t for t in tokens if t.startswith("--")]
            srcs = [t for t in tokens if not t.startswith("--")][:-1]
            src_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if src_stage:
                assert src_stage in names, f"COPY --from unknown stage {src_stage}"
                continue
            for src in srcs:
                n += 1
                assert (ROOT / src).exists(), f"{name}: COPY source {src} missing"
                assert not ignored(src.rstrip("/"), patterns), f"{name}: {src} excluded by .dockerignore"
    assert n >= 5


def test_dockerignore_keeps_state_and_secrets_out():
    patterns = dockerignore_patterns()
    for path in (
        ".git",
        ".venv",
        ".kfct",
        "build",
        ".env",
        "manifests/base/secrets/s3-credentials.env",
        "kfct/__pycache__/x.pyc",
    ):
        assert ignored(path, patterns), f"{path} would be sent to the docker daemon"


@pytest.mark.parametrize(
    "name,target,op",
    [("Dockerfile", "component", "CMD"), ("Dockerfile", "serving", "ENTRYPOINT"), ("Dockerfile.gpu", None, "CMD")],
)
def test_entrypoints_import(name, target, op):
    _, stages = parse_dockerfile(ROOT / name)
    stage = next(s for s in stages if s.name == target) if target else stages[-1]
    argv = exec_form(stages, stage, op)
    assert argv, f"{name}:{target} has no {op}"
    assert_module_runs(argv)


def test_cli_image_builds_match_dockerfile_targets():
    """`kfct images` builds exactly the targets the Dockerfiles define, tagged from settings."""
    from kfct.cli.cluster import image_builds
    from kfct.runtime.settings import Settings

    s = Settings(image_registry="reg.example/kfct", image_tag="1.2.3")
    builds = image_builds(s, code_version="abc")
    for b in builds:
        _, stages = parse_dockerfile(ROOT / b["file"])
        names = {st.name for st in stages}
        if b["target"]:
            assert b["target"] in names
        assert b["image"].startswith("reg.example/kfct/") and b["image"].endswith(":1.2.3")
        assert b["build"][-1] == "." and "KFCT_CODE_VERSION=abc" in b["build"]
    assert {b["image"] for b in builds} == {s.component_image, s.serving_image, s.gpu_image}
