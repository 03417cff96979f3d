"""The ``shellid`` command line: one sub-command per module in :mod:`api.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when listed or run, and only the command
being run builds its options (generated from the settings models, which cost pydantic), so
``shellid --help`` is fast. Errors the user can fix, bad settings included, are printed as one
line (``shellid: error: ...``), never as a traceback (``--debug`` or ``SHELLID_DEBUG=1`` shows
it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Collection, Sequence
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
    "doctor": "doctor_cmd",
}


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 2."""


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"api.commands.{COMMANDS[name]}")


def build_parser(
    available: dict[str, ModuleType], chosen: Collection[str] | None = None
) -> argparse.ArgumentParser:
    """The ``shellid`` parser; with ``chosen`` only those commands' options are added (the
    others still list their one-line help)."""
    parser = argparse.ArgumentParser(
        prog="shellid",
        description="Identify species from photos by few-shot metric learning.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in available.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        if chosen is None or name in chosen:
            module.add_arguments(command)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMANDS else None


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
    command = _command_in(argv)
    parser = build_parser(_available_commands(), [command] if command else [])
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # a mistyped option: show the usage of the command it was given to
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not args.command:
        parser.print_help()
        return 2
    from .settings import CommandLineSettings, SettingsError

    try:
        debug = args.debug or CommandLineSettings.load().debug
    except SettingsError as exc:
        print(f"shellid: error: {exc}", file=sys.stderr)
        return 2
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
        from .remedies import user_message

        print(f"shellid: {kind}: {user_message(exc)}", file=sys.stderr)
        if kind == "unexpected error":
            print("shellid: run again with --debug for the full traceback", file=sys.stderr)
        return 2 if kind == "error" else 1


#: commands that only read: once their answers are written, the process ends without the
#: interpreter's teardown (freeing LanceDB's, FAISS's and ONNX Runtime's modules took about
#: 0.3 s of a one-off answer; nothing is left to write or close)
QUICK_EXIT = frozenset({"identify", "search", "species"})


def entry() -> None:
    """The ``shellid`` executable: :func:`main`, then the exit (quick for :data:`QUICK_EXIT`
    commands; :func:`main` itself never exits, so it can be called from Python)."""
    argv = sys.argv[1:]
    code = main(argv)
    if _command_in(argv) in QUICK_EXIT:
        import contextlib
        import logging
        import os

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe (shellid ... | head)
                stream.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
