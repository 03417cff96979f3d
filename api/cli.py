"""The ``shellid`` command line: one sub-command per module in :mod:`api.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when listed or run, so ``shellid --help`` is
fast. Errors the user can fix are printed as one line (``shellid: error: ...``), never as a
traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

#: command name -> module under api.commands (module names avoid clashing with builtins).
COMMANDS: dict[str, str] = {
    "embed": "embed_cmd",
    "train": "train_cmd",
    "prior": "prior_cmd",
    "enroll": "enroll_cmd",
    "identify": "identify_cmd",
    "search": "search_cmd",
    "species": "species_cmd",
    "remove": "remove_cmd",
    "reindex": "reindex_cmd",
    "serve": "serve_cmd",
    "demo": "demo_cmd",
    "evaluate": "evaluate_cmd",
    "audit": "audit_cmd",
}


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 2."""


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"api.commands.{COMMANDS[name]}")


def build_parser(available: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shellid",
        description="Identify species from photos by few-shot metric learning.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in available.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str | None) -> argparse.ArgumentParser:
    """The parser of sub-command ``name`` (the top-level one when there is none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return parser


def _available_commands() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for name in COMMANDS:
        try:
            found[name] = _load(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("api.commands"):
                continue  # command not built in this version
            raise
    return found


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_available_commands())
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # a mistyped option: show the usage of the command it was given to
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not args.command:
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("SHELLID_DEBUG") == "1"
    module = _load(args.command)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("shellid: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.: stop quietly
        sys.stderr.close()
        return 0
    except Exception as exc:  # every failure becomes one clear line unless --debug
        if debug:
            raise
        kind = (
            "error"
            if isinstance(exc, UsageError | ValueError | RuntimeError | OSError | KeyError)
            else "unexpected error"
        )
        print(f"shellid: {kind}: {exc}", file=sys.stderr)
        if kind == "unexpected error":
            print("shellid: run again with --debug for the full traceback", file=sys.stderr)
        return 2 if kind == "error" else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
