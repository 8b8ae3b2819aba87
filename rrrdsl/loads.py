"""``load`` statements: a diffusers pipeline folder named inside a ``.rrr`` script.

``load "sd15" as "sd" levels=50`` makes ``model("sd", ...)`` the pipeline in the folder
``sd15``, relative to the script's folder (the current folder for text without one, such as
the REPL's). The runner calls :func:`load` when it checks the statement, so that the statements
after it compile against the pipeline, and ``rrr check`` runs it too: the folder is checked and
its configs read (:func:`rrrdsl.register_diffusers`: safetensors only, classes from diffusers
and transformers only, no weights read until the first sample). The options are those of
``register_diffusers``: ``levels``, ``max_batch`` and ``dtype`` (default ``--dtype``); the device
is the run's (``--device``).

Names: ``load`` may not take a name that the registry knows from elsewhere (a shipped model,
``--model``, a Python registration), and one program may not load a name twice; both are
refused at the name. A name loaded by an earlier program in the same process (a REPL session
running a script again) is loaded anew.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .errors import InvalidValueError, RrrdslError, at_argument
from .lang.program import LOAD_OPTIONS, Load

#: half precision, refused on the CPU: there it is slower than float32 (float16: 1.3-1.6x,
#: measured on small UNets) and less precise
HALF = ("float16", "bfloat16")
#: names registered by ``load`` statements in this process
LOADED: set[str] = set()


def half_on_cpu(dtype: str, device: str) -> Optional[str]:
    """Why ``dtype`` cannot run on ``device``, or None."""
    if dtype in HALF and device == "cpu":
        return f"{dtype} needs a CUDA device: on the CPU half precision is slower than float32 (1.3-1.6x) and less precise"
    return None


def folder_of(statement: Load, filename: Optional[str]) -> Path:
    """The statement's folder: as written when absolute, else relative to the folder of ``filename``."""
    path = Path(statement.path)
    return path if path.is_absolute() or filename is None else Path(filename).parent / path


def load(statement: Load, filename: Optional[str], defined: dict[str, int], device: str = "cpu", dtype: str = "float32", quiet: bool = False) -> None:
    """Register the pipeline of ``statement`` (of the script ``filename``) under its name.

    ``defined`` holds the names the program has loaded so far, with their lines (this one is
    added). An error is marked with the part of the statement at fault
    (:attr:`~rrrdsl.errors.RrrdslError.argument`): ``"path"``, ``"name"`` or an option's name.
    """
    from .models.registry import list_models
    from .zoo.diffusers.loading import register_diffusers

    name, options = statement.name, {"dtype": dtype, **dict(statement.options)}
    if name in defined:
        raise at_argument(InvalidValueError(f'model("{name}") is already loaded on line {defined[name]}', hint="give each pipeline its own name"), "name")
    known = list_models().get(f'model("{name}")')
    if known is not None and name not in LOADED:
        raise at_argument(InvalidValueError(f'model("{name}") already names a model: {known}', hint="choose another name (rrr models lists the names in use)"), "name")
    problem = half_on_cpu(options["dtype"], device) if isinstance(options["dtype"], str) else None
    if problem:
        raise at_argument(InvalidValueError(problem, hint="run with --device cuda, or load in float32"), "dtype")
    try:
        register_diffusers(name, folder_of(statement, filename), device=device, quiet=quiet, **options)
    except RrrdslError as error:
        raise error if error.argument in LOAD_OPTIONS else at_argument(error, "path")
    defined[name] = statement.line
    LOADED.add(name)
