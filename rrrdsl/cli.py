"""The ``rrr`` command.

Each subcommand is one function registered with :func:`subcommand`, which declares its
arguments; ``main`` builds the argparse parser from the registry. Exit codes: 0 success,
1 errors in the input (``rrr check`` found some), 2 usage errors (bad arguments, a file that
cannot be read).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional, Sequence, Union

from . import __version__

if TYPE_CHECKING:
    from .run import RunOptions

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


#: the options `rrr check` and `rrr run` share: the same settings give the same checks
_SHARED = (
    argument("--out", default=".", metavar="DIR", help="directory for the outputs (default: the current directory)"),
    argument("--force", action="store_true", help="replace existing files that the run did not write"),
    argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to sample (default: cpu)"),
    argument("--seed", type=int, default=None, metavar="N", help="added to every sample statement's seed (default 0)"),
    argument(
        "--n-scale",
        type=float,
        default=None,
        metavar="S",
        help="multiply every sample's n by S (at least 1 sample; default $RRR_N_SCALE or 1)",
    ),
    argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help='name a diffusers pipeline folder: model("NAME", ...) in the script (repeatable; weights load at the first sample)',
    ),
    argument("--levels", type=int, default=None, metavar="K", help="levels of the --model pipelines: K evenly spaced training steps (default: all)"),
    argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="precision of the pipelines' networks (--model and load; default float32; half precision with --device cuda only)",
    ),
)


def _run_options(args: argparse.Namespace, quiet: bool) -> Union["RunOptions", str]:
    """The :class:`~rrrdsl.run.RunOptions` of the shared flags, or what is wrong with them."""
    from pathlib import Path

    from .run import RunOptions, n_scale_default

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return (
                f"--device cuda: CUDA is not available (torch {torch.__version__}, "
                f"{'built without CUDA' if torch.version.cuda is None else 'no GPU found'}); use --device cpu"
            )
    from .loads import half_on_cpu

    if half_on_cpu(args.dtype, args.device):
        return f"--dtype {half_on_cpu(args.dtype, args.device)}; use --device cuda"
    if args.seed is not None and not 0 <= args.seed < 2**64:
        return f"--seed must be an integer in 0..2**64-1, got {args.seed}"
    try:
        n_scale = args.n_scale if args.n_scale is not None else n_scale_default()
    except ValueError:
        return "$RRR_N_SCALE must be a number"
    if not (n_scale > 0 and n_scale != float("inf")):
        return f"--n-scale must be a finite number > 0, got {n_scale}"
    problem = _register_models(args.model, args.levels, args.device, args.dtype, quiet)
    if problem:
        return problem
    return RunOptions(Path(args.out), args.device, args.seed or 0, quiet, n_scale, force=args.force, dtype=args.dtype)


def _register_models(named: Sequence[str], levels: Optional[int], device: str, dtype: str, quiet: bool) -> Optional[str]:
    """Register each ``NAME=PATH`` of ``--model`` (:func:`rrrdsl.register_diffusers`: the folder is
    checked, no weights are read; ``quiet`` loads them without the libraries' bars and warnings),
    or say what is wrong with the first bad one."""
    if not named:
        return None
    from .errors import RrrdslError
    from .zoo.diffusers.loading import register_diffusers

    for item in named:
        name, _, path = item.partition("=")
        if not name or not path:
            return f"--model {item}: expected NAME=PATH, a model name and a diffusers pipeline folder"
        try:
            register_diffusers(name, path, levels=levels, device=device, dtype=dtype, quiet=quiet)
        except RrrdslError as error:
            return f"--model {item}: {error.message}" + (f" ({error.hint})" if error.hint else "")
    return None


@subcommand(
    "check",
    "check .rrr files exactly as `rrr run` does before its first sample; print every error",
    argument("files", nargs="+", metavar="FILE", help="a .rrr program"),
    *_SHARED,
)
def check(args: argparse.Namespace) -> int:
    """``rrr check FILE...``: every error of every file (:func:`rrrdsl.run.check_file`); 1 if
    any, 2 when a file cannot be read (the others are still checked), 0 when all are clean."""
    from .run import check_file

    options = _run_options(args, quiet=True)
    if isinstance(options, str):
        return _usage_error(options)
    total, unreadable = 0, 0
    for path in args.files:
        try:
            errors = check_file(path, options).errors
        except OSError as exc:
            print(f"rrr: error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            unreadable += 1
            continue
        for error in errors:
            print(error)
        if not errors:
            print(f"{path}: ok")
        total += len(errors)
    if total:
        print(f"{total} error{'s' if total != 1 else ''} in {len(args.files)} file{'s' if len(args.files) != 1 else ''}")
    return EXIT_USAGE if unreadable else EXIT_ERRORS if total else EXIT_OK


@subcommand(
    "fmt",
    "format .rrr files in place: one layout, comments and blank lines kept, meaning unchanged",
    argument("files", nargs="+", metavar="FILE", help="a .rrr program"),
    argument("--check", action="store_true", help="change nothing; print a diff and exit 1 if any file would change"),
)
def fmt(args: argparse.Namespace) -> int:
    """``rrr fmt [--check] FILE...``: 0 when every file is (or now is) formatted; 1 when a file
    has errors (left as it is) or, with ``--check``, would change; 2 when one cannot be read."""
    from .errors import RrrdslError
    from .formatter import format_file

    changed, failed, unreadable = [], 0, False
    for path in args.files:
        try:
            diff = format_file(path, write=not args.check)
        except OSError as exc:
            print(f"rrr fmt: cannot format {path}: {exc.strerror or exc}", file=sys.stderr)
            unreadable = True
            continue
        except RrrdslError as error:
            print(error, file=sys.stderr)
            failed += 1
            continue
        if diff:
            changed.append(path)
            if args.check:
                sys.stdout.write(diff)
            print(f"{'would reformat' if args.check else 'reformatted'} {path}", file=sys.stderr)
    verb = "would be reformatted" if args.check else "reformatted"
    summary = f"{len(changed)} of {len(args.files)} file{'s' if len(args.files) != 1 else ''} {verb}"
    print(summary + (f", {failed} with errors left as they are" if failed else ""), file=sys.stderr)
    if unreadable:
        return EXIT_USAGE
    return EXIT_ERRORS if failed or (args.check and changed) else EXIT_OK


@subcommand(
    "run",
    "run a .rrr script: sample, plot and write every output, then print a summary",
    argument("script", metavar="SCRIPT", help="a .rrr program"),
    *_SHARED,
    argument("--quiet", action="store_true", help="no progress bars or messages; only the summary"),
    argument(
        "--distributed",
        action="store_true",
        help="require torchrun's environment and shard the particles over its processes (detected without it)",
    ),
)
def run(args: argparse.Namespace) -> int:
    """``rrr run SCRIPT``: 0 success, 1 errors in the script, 2 usage, 130 interrupted."""
    from .errors import SamplerError
    from .run import run_file

    options = _run_options(args, quiet=args.quiet)
    if isinstance(options, str):
        return _usage_error(options)
    if args.distributed:
        from .samplers.distributed import start

        try:
            start(required=True)
        except SamplerError as error:
            return _usage_error(f"{error.message}; {error.hint}")
    return run_file(args.script, options)


@subcommand(
    "repl",
    "an interactive session: statements, expressions and :commands (:help lists them)",
    argument("--out", default=".", metavar="DIR", help="directory for plots and sample files (default: the current directory)"),
    argument("--force", action="store_true", help="replace existing files that the session did not write"),
)
def repl(args: argparse.Namespace) -> int:
    """``rrr repl``: reads statements until ``:quit`` or end of input."""
    from pathlib import Path

    from .repl import Session

    return Session(Path(args.out), force=args.force).loop()


@subcommand("models", "list the models and oracles that expressions can name")
def models(args: argparse.Namespace) -> int:
    """``rrr models``: every resolvable name with its description."""
    from .repl import models_table

    print(models_table())
    return EXIT_OK


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
    from .bench.cli import add_bench_parser
    from .zoo.cli import add_train_parser

    add_train_parser(commands)
    add_bench_parser(commands)
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
    from .errors import RrrdslError

    try:
        return args.handler(args)
    except RrrdslError as error:  # `rrr train` / `rrr bench` settings checked before any work
        print(f"rrr {args.command}: {error}", file=sys.stderr)
        return EXIT_ERRORS
    except BrokenPipeError:  # `rrr models | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")  # keep the interpreter's final flush quiet
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
