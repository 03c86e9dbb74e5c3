"""The ``seqstream`` command line.

Each sub-command lives in its own module under :mod:`stream_app.commands` and exposes
``register(subparsers)``; this module discovers them, so adding a command never edits here.
A command's ``run(args) -> int`` receives the parsed arguments; it builds the settings once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings

from schemas.exceptions import SeqstreamError


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (the full usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    import stream_app.commands as commands_pkg

    parser = _Parser(
        prog="seqstream",
        description="Real-time sequence recommendation on Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"seqstream {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"stream_app.commands.{mod.name}")
        module.register(sub)
    return parser


def version() -> str:
    """The installed distribution's version (pyproject.toml), or "unknown" when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("seqstream")
    except PackageNotFoundError:
        return "unknown"


def _show_data_warning(command: str):
    """A ``warnings.showwarning`` that prints a log reader's DataWarning as one line."""
    from model_core.datasets.fields import DataWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning):
            print(f"seqstream {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shown = warnings.showwarning
    warnings.showwarning = _show_data_warning(args.command)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:
        # `seqstream inspect FILE | head`: the reader has gone, which is not an error of
        # ours; stdout goes to /dev/null so the interpreter's own flush at exit is silent,
        # and the exit status is the shell's for a closed pipe (128 + SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except SeqstreamError as e:
        # bad settings: one line per bad variable, each with the prefix (grep-able)
        for line in getattr(e, "problems", None) or [str(e)]:
            print(f"seqstream {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seqstream {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
