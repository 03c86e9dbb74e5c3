"""The ``seqstream`` command line.

Each sub-command lives in its own module under :mod:`stream_app.commands` and exposes
``register(subparsers)``; this module discovers them, so adding a command never edits here.
A command's ``run(args) -> int`` receives the parsed arguments; it builds the settings once.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from schemas.exceptions import SeqstreamError


def build_parser() -> argparse.ArgumentParser:
    import stream_app.commands as commands_pkg

    parser = argparse.ArgumentParser(
        prog="seqstream",
        description="Real-time sequence recommendation on Kafka.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"stream_app.commands.{mod.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SeqstreamError as e:
        print(f"seqstream {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seqstream {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
