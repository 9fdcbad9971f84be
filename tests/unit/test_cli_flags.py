"""Every `kfct` command keeps its flags: names, destinations, defaults, choices, what each takes.

cli_flags.json was written from the parser before the shared argument shapes
(kfct.cli.options) were factored out; a refactoring of the parsers must leave it as it is.
When a flag is meant to change, rewrite it with `python -m tests.unit.test_cli_flags`
and let the diff show the change. Help texts are left out: rewording one is not a change of interface.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("cli_flags.json")


def flag_sets(parser: argparse.ArgumentParser, path: str = "kfct") -> dict[str, dict[str, str]]:
    """{"kfct data generate": {"--rows": "<what argparse does with it>", ...}, ...} for every (sub)command."""
    out: dict[str, dict[str, str]] = {}
    flags = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                out.update(flag_sets(subparser, f"{path} {name}"))
        elif not isinstance(action, argparse._HelpAction):
            choices = list(action.choices) if action.choices else None
            flags["/".join(action.option_strings) or action.dest] = (
                f"{type(action).__name__} dest={action.dest} default={action.default!r} required={action.required} "
                f"nargs={action.nargs} type={getattr(action.type, '__name__', None)} choices={choices}"
            )
    out[path] = flags
    return out


def current() -> dict[str, dict[str, str]]:
    from kfct.cli import build_parser

    return flag_sets(build_parser())


def test_every_command_keeps_its_flags():
    now, before = current(), json.loads(SNAPSHOT.read_text())
    assert sorted(now) == sorted(before), "commands added or gone"
    changed = {
        cmd: {
            f: (before[cmd].get(f), now[cmd].get(f))
            for f in set(before[cmd]) | set(now[cmd])
            if before[cmd].get(f) != now[cmd].get(f)
        }
        for cmd in now
        if now[cmd] != before[cmd]
    }
    assert not changed, f"flags changed (before, now): {changed}"


def test_the_snapshot_sees_a_changed_default():
    parser = argparse.ArgumentParser(prog="kfct")
    parser.add_argument("--rows", type=int, default=3)
    other = argparse.ArgumentParser(prog="kfct")
    other.add_argument("--rows", type=int, default=4)
    assert flag_sets(parser) != flag_sets(other)


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
