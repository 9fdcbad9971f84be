"""The hash-chained audit trail: verify catches an edited, removed or reordered entry; the CLI reports it."""

import json

import pytest

from kfct.cli import main
from kfct.governance import audit


@pytest.fixture
def trail(kfct_home):
    audit.record("validation", passed=True, model_name="churn")
    audit.record("gate_decision", model_name="churn", deploy=True, reasons=["roc_auc 0.85 >= 0.8"])
    audit.record("model_registered", model_name="churn", version="1")
    audit.record("alias_moved", model_name="churn", alias="champion", version="1", previous=None)
    audit.record("model_registered", model_name="other", version="1")
    return audit.default_path()


def _lines(path):
    return path.read_text().splitlines(keepends=True)


def test_intact_chain_verifies(trail):
    res = audit.verify(trail)
    assert res.ok and res.entries == 5
    assert main(["audit", "verify"]) == 0


def test_edited_entry_is_caught_with_its_line(trail, capsys):
    lines = _lines(trail)
    entry = json.loads(lines[1])
    entry["deploy"] = False  # someone rewrites history
    lines[1] = json.dumps(entry, sort_keys=True) + "\n"
    trail.write_text("".join(lines))
    res = audit.verify(trail)
    assert not res.ok and res.line == 2 and "edited" in res.problem
    assert main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert "line 2" in err and "edited" in err


def test_removed_entry_is_caught(trail):
    lines = _lines(trail)
    del lines[2]
    trail.write_text("".join(lines))
    res = audit.verify(trail)
    assert not res.ok and res.line == 3 and "removed or reordered" in res.problem


def test_removed_last_entry_with_rehash_attempt_still_breaks_chain(trail):
    # Recomputing one entry's own hash after editing it does not help: the next link breaks.
    lines = _lines(trail)
    entry = json.loads(lines[0])
    entry["passed"] = False
    entry["hash"] = audit._digest(entry)
    lines[0] = json.dumps(entry, sort_keys=True) + "\n"
    trail.write_text("".join(lines))
    res = audit.verify(trail)
    assert not res.ok and res.line == 2


def test_reordered_entries_are_caught(trail):
    lines = _lines(trail)
    lines[1], lines[2] = lines[2], lines[1]
    trail.write_text("".join(lines))
    res = audit.verify(trail)
    assert not res.ok and res.line == 2


def test_garbage_line_is_caught(trail):
    trail.write_text(trail.read_text() + "not json\n")
    res = audit.verify(trail)
    assert not res.ok and res.line == 6 and "not valid JSON" in res.problem


def test_show_prints_history_of_one_model(trail, capsys):
    assert main(["audit", "show", "--model", "churn"]) == 0
    out = capsys.readouterr().out
    assert "gate_decision" in out and "alias_moved" in out and "alias=champion" in out
    assert "other" not in out
    assert main(["audit", "show", "--model", "churn", "--version", "1", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["event"] for e in entries] == ["validation", "gate_decision", "model_registered", "alias_moved"]


def test_show_and_verify_on_empty_trail(kfct_home, capsys):
    assert main(["audit", "verify"]) == 0
    assert "0 entries" in capsys.readouterr().out
    assert main(["audit", "show", "--model", "nobody"]) == 0
    assert "no audit entries for nobody" in capsys.readouterr().out
