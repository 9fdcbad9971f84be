"""GitHub Actions workflows, validated offline.

Structure (triggers, jobs, steps, `needs`), pinned action versions, no literal
credentials, and that what the workflows call exists here: Makefile targets, `kfct`
subcommands and flags (parsed by the real CLI parser), Dockerfile targets.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WF = ROOT / ".github" / "workflows"


def load(name: str) -> dict:
    data = yaml.safe_load((WF / name).read_text())
    # YAML 1.1 reads the bare key `on` as True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(wf: dict):
    for job_name, job in wf["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def shell_commands(run: str) -> list[list[str]]:
    """Simple commands of a `run:` script, GitHub expressions and $VARS replaced by placeholders."""
    text = re.sub(r"\$\{\{[^}]*\}\}", "X", run)
    text = re.sub(r'"\$\{?\w+[^"]*"', "X", text)
    text = re.sub(r"\$\{?[A-Za-z_]\w*(?:[^}\s]*\})?", "X", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\s*(?:&&|\|\||;)\s*", line):
            try:
                tokens = shlex.split(part)
            except ValueError:
                continue
            if tokens:
                out.append(tokens)
    return out


@pytest.fixture(scope="module", params=["ci.yml", "cd.yml"])
def workflow(request):
    return request.param, load(request.param)


def test_structure(workflow):
    name, wf = workflow
    assert wf.get("name") and wf.get("on") and wf.get("jobs"), name
    for job_name, job in wf["jobs"].items():
        assert job.get("runs-on"), f"{name}:{job_name} runs-on"
        assert job.get("steps"), f"{name}:{job_name} has no steps"
        assert isinstance(job.get("timeout-minutes"), int), f"{name}:{job_name} needs a timeout"
        for need in [job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs") or []:
            assert need in wf["jobs"], f"{name}:{job_name} needs unknown job {need}"
    for job_name, step in steps(wf):
        assert ("uses" in step) != ("run" in step), f"{name}:{job_name}: a step has exactly one of uses/run: {step}"
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@v\d+(\.\d+)*", step["uses"]), f"unpinned action {step['uses']}"


def test_no_literal_credentials(workflow):
    name, _ = workflow
    text = (WF / name).read_text()
    for m in re.finditer(r"(?im)^\s*([\w-]*(?:token|password|secret|key)[\w-]*)\s*:\s*(.+)$", text):
        value = m.group(2).strip()
        if m.group(1).lower() in ("cache-dependency-path",):
            continue
        assert value.startswith("${{") or value in ("", "|"), f"{name}: {m.group(1)} is a literal: {value}"


def test_make_targets_exist(workflow):
    name, wf = workflow
    targets = makefile_targets()
    used = set()
    for _, step in steps(wf):
        for cmd in shell_commands(step.get("run", "")):
            if cmd[0] == "make":
                used |= {t for t in cmd[1:] if "=" not in t and not t.startswith("-")}
    assert used, f"{name} calls no make target"
    assert used <= targets, f"{name} calls missing make targets {used - targets}"


def test_kfct_commands_parse_with_the_real_cli(workflow):
    from kfct.cli import build_parser

    name, wf = workflow
    parser = build_parser()
    checked = 0
    for _, step in steps(wf):
        run = step.get("run", "")
        if "kfct" not in run:
            continue
        # bash arrays: expand args=(...) into the command that uses "${args[@]}"
        arrays = dict(re.findall(r"(\w+)=\((.*?)\)", run))
        for raw in run.splitlines():
            for var, body in arrays.items():
                raw = raw.replace(f'"${{{var}[@]}}"', body)
            if "bin/kfct " not in raw:
                continue
            for cmd in shell_commands(raw):
                if cmd[0].endswith("bin/kfct"):
                    try:
                        parser.parse_args(cmd[1:])
                    except SystemExit as exc:
                        pytest.fail(f"{name}: `{' '.join(cmd)}` does not parse ({exc})")
                    checked += 1
    # Both workflows run the CLI (ci: compile --gpu; cd: compile/submit): finding none means this
    # test lost its subject (a renamed path, a changed step), not that all is well.
    assert checked, f"{name}: no `bin/kfct ...` command found to check"


def test_ci_runs_tests_compile_and_manifests():
    wf = load("ci.yml")
    assert {"push", "pull_request"} <= set(wf["on"])
    runs = "\n".join(s.get("run", "") for _, s in steps(wf))
    assert "make test" in runs and "make compile" in runs and "kubectl kustomize" in runs
    assert "--gpu" in runs, "the GPU variant is compiled too"


def test_cd_builds_pushes_compiles_and_submits_on_main():
    wf = load("cd.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in wf["on"] and "repository_dispatch" in wf["on"]
    jobs = wf["jobs"]
    assert jobs["build-push"]["needs"] == "test" and jobs["submit"]["needs"] == "build-push"
    assert jobs["build-push"]["permissions"]["packages"] == "write"
    # every matrix image is a target the Dockerfiles define
    import importlib.util

    spec = importlib.util.spec_from_file_location("_kfct_dockerfiles", Path(__file__).with_name("test_dockerfiles.py"))
    mod = importlib.util.module_from_spec(spec)
    import sys

    sys.modules.setdefault(spec.name, mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    parse_dockerfile = mod.parse_dockerfile

    for entry in jobs["build-push"]["strategy"]["matrix"]["include"]:
        _, stages = parse_dockerfile(ROOT / entry["file"])
        assert entry["target"] in {s.name for s in stages}, entry
    build = next(s for s in jobs["build-push"]["steps"] if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["push"] is True and "${{ github.sha }}" in build["with"]["tags"]
    # the submit job compiles against the pushed tag and submits with the KFP secrets
    env = jobs["submit"]["env"]
    assert env["KFCT_IMAGE_TAG"] == "${{ github.sha }}"
    assert env["KFCT_KFP_HOST"].startswith("${{ secrets.") and env["KFCT_KFP_TOKEN"].startswith("${{ secrets.")
    runs = "\n".join(s.get("run", "") for s in jobs["submit"]["steps"])
    assert "kfct compile" in runs and "kfct submit" in runs
