"""Argument shapes several `kfct` commands share, added the same way everywhere.

Built while the parser is, so this module imports nothing beyond the standard library.
"""

from __future__ import annotations

import argparse


def command_group(
    sub: argparse._SubParsersAction, name: str, help: str, dest: str, metavar: str = "SUBCOMMAND"
) -> argparse._SubParsersAction:
    """`kfct NAME ...`, a command made of subcommands (`kfct data generate`); one of them is required,
    so `kfct NAME` alone is a usage error, not a silent no-op. Returns the group to add them to."""
    parser = sub.add_parser(name, help=help)
    group = parser.add_subparsers(dest=dest, metavar=metavar)
    group.required = True
    return group


def add_model_option(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """`--model NAME` of the serving commands, read as `args.model_name` (None: the config's model)."""
    parser.add_argument("--model", dest="model_name", default=None, help=help)
