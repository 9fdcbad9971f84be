"""`kfct` command line. Each command group lives in its own module with `add_commands`.

Command modules only build argparse parsers at import; the work (and the heavy
imports) happens inside the handler that runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module exposes add_commands(subparsers) registering handlers via set_defaults(func=...).
COMMAND_MODULES = (
    "kfct.cli.data",
    "kfct.cli.run",
    "kfct.cli.serve",
    "kfct.cli.monitor",
    "kfct.cli.cluster",
    "kfct.cli.config",
    "kfct.cli.predict",
    "kfct.cli.outcomes",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kfct", description="kfct: continuous training for tabular ML on Kubeflow Pipelines.")
    parser.add_argument("--config", help="YAML config merged over the packaged default")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from kfct.errors import KfctError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        import os

        from kfct.runtime.settings import reset_settings

        os.environ["KFCT_CONFIG"] = args.config
        reset_settings()
    try:
        rc = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
    except KfctError as exc:
        print(f"kfct: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `kfct predict | head -1`: the reader left; what it wanted it has. No traceback, and
        # stdout pointed at /dev/null so the interpreter's own final flush stays quiet too.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe stopped
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
