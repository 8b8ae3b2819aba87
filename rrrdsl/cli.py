"""The ``rrr`` command.

Each subcommand is one function registered with :func:`subcommand`, which declares its
arguments; ``main`` builds the argparse parser from the registry. Exit codes: 0 success,
1 errors in the input (``rrr check`` found some), 2 usage errors (bad arguments, a file that
cannot be read).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NamedTuple, Optional, Sequence

from . import __version__

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace], int]


class _Argument(NamedTuple):
    args: tuple
    kwargs: dict


class _Subcommand(NamedTuple):
    help: str
    arguments: tuple[_Argument, ...]
    handler: Handler


_SUBCOMMANDS: dict[str, _Subcommand] = {}


def argument(*args: object, **kwargs: object) -> _Argument:
    """One ``add_argument`` call of a subcommand, as data."""
    return _Argument(args, kwargs)


def subcommand(name: str, help: str, *arguments: _Argument) -> Callable[[Handler], Handler]:
    """Register ``rrr NAME``: the decorated function gets the parsed arguments and returns
    the exit code."""

    def register(handler: Handler) -> Handler:
        _SUBCOMMANDS[name] = _Subcommand(help, arguments, handler)
        return handler

    return register


def _usage_error(message: str) -> int:
    print(f"rrr: error: {message}", file=sys.stderr)
    return EXIT_USAGE


@subcommand(
    "check",
    "parse and check .rrr files without running them; print every error",
    argument("files", nargs="+", metavar="FILE", help="a .rrr program"),
)
def check(args: argparse.Namespace) -> int:
    """``rrr check FILE...``: every error of every file; 1 if any, 0 when all are clean."""
    from .errors import RrrdslError
    from .lang.parse import check as check_text
    from .lang.parse import read_source

    results: dict[str, list[RrrdslError]] = {}
    for path in args.files:
        try:
            results[path] = check_text(read_source(path), path)
        except OSError as exc:
            return _usage_error(f"cannot read {path}: {exc.strerror or exc}")
        except RrrdslError as error:  # not UTF-8 text
            results[path] = [error]
    total = 0
    for path, errors in results.items():
        for error in errors:
            print(error)
        if not errors:
            print(f"{path}: ok")
        total += len(errors)
    if total:
        print(f"{total} error{'s' if total != 1 else ''} in {len(args.files)} file{'s' if len(args.files) != 1 else ''}")
    return EXIT_ERRORS if total else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``rrr`` and all registered subcommands."""
    parser = argparse.ArgumentParser(
        prog="rrr", description="Compose diffusion models as energy-based models and sample them with annealed MCMC."
    )
    parser.add_argument("--version", action="version", version=f"rrr {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in _SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        for arg in command.arguments:
            sub.add_argument(*arg.args, **arg.kwargs)
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``rrr`` with ``argv`` (``sys.argv[1:]`` when None) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version and usage errors
        return int(exit.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return _usage_error("choose a command: " + ", ".join(_SUBCOMMANDS))
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
