"""The run configuration travels as the typed `RunConfig` model; JSON only at the kfp boundary.

`kfct.config` is the one boundary module: `config_to_json` (model -> the `config_json`
string parameter of a compiled pipeline) and `config_from_json` (parameter -> model, in
each stage), plus `validate_config`/`config_dict` for files and run requests. Everywhere
else a stage reads attributes (`cfg.gate.min_improvement`), which mypy checks; a string
lookup (`cfg["gate"]`) is a key nothing checks.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("components", "pipelines", "serving", "kfct")
BOUNDARY = {Path("kfct/config.py")}
LOOKUP = re.compile(r"""\b(?:cfg|config)(?:\[\s*["']|\.get\(\s*["'])""")


def string_lookups(root: Path = ROOT) -> list[str]:
    found = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root)
            if rel in BOUNDARY or (folder == "kfct" and rel.parts[1] in ("components", "pipelines", "serving")):
                continue  # the boundary itself; the symlinks to the top-level folders (read there)
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if LOOKUP.search(code):
                    found.append(f"{rel}:{n}: {line.strip()}")
    return found


def test_no_string_lookups_into_the_config_outside_its_boundary():
    found = string_lookups()
    assert not found, "read the typed RunConfig (cfg.section.key):\n" + "\n".join(found)


def test_the_check_sees_a_string_lookup(tmp_path):
    (tmp_path / "components").mkdir()
    (tmp_path / "components" / "x.py").write_text(
        'label = cfg["dataset"]["label"]\nok = cfg.dataset.label\nalias = config.get(\'alias\')\n'
    )
    assert string_lookups(tmp_path) == [
        'components/x.py:1: label = cfg["dataset"]["label"]',
        "components/x.py:3: alias = config.get('alias')",
    ]


def test_stages_get_the_model_from_the_parameter_and_the_parameter_from_the_model():
    from kfct.config import RunConfig, config_from_json, config_to_json, load_config

    cfg = load_config(overrides={"gate": {"min_improvement": 0.01}})
    assert isinstance(cfg, RunConfig) and cfg.gate.min_improvement == 0.01
    text = config_to_json(cfg)
    assert '"register"' in text and "register_" not in text  # the file's key, not the attribute name
    assert config_from_json(text) == cfg
