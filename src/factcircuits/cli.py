"""The `factcircuits` command. Each subcommand lives in `factcircuits.commands.<name>`,
which defines `register(subparsers)`; errors meant for the user are `UserError`s and print as
one line."""

from __future__ import annotations

import argparse
import importlib
import sys

from factcircuits.errors import UserError

# Order is the order shown in --help.
SUBCOMMANDS = ["inspect", "dataset", "run", "sweep", "sweeps", "runs", "render", "publish",
               "models"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factcircuits",
        description="Find where transformer LMs store and retrieve facts; write it up.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"factcircuits.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"factcircuits.commands.{name}":
                raise
            continue  # subcommand not built yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    name = "factcircuits"
    try:  # Ctrl-C while the subcommands import (torch: seconds) is one line too
        args = build_parser().parse_args(argv)
        name = f"factcircuits {args.command}"
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP during a run
        why = getattr(exc, "reason", "interrupted")
        print(f"{name}: {why}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except OSError as exc:  # the file system said no (full, read-only, permissions): one line
        from factcircuits.files import describe_fault

        print(f"{name}: error: {describe_fault(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
