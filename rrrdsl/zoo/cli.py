"""``rrr train [FAMILY] [NAME] [options]``: train the learned models of one family of the zoo.

=========  ====================================================================================
family     trains
=========  ====================================================================================
toy2d      (the default) an energy or score model of a named 2D dataset, or the whole shipped
           2D zoo with ``--zoo`` (:mod:`rrrdsl.zoo.toy2d.train`)
digits     the digits backbone, guidance classifier and evaluator (:mod:`rrrdsl.zoo.digits.train`)
objects    the energy-parameterised objects UNet and its score twin (:mod:`rrrdsl.zoo.objects.train`)
=========  ====================================================================================

Every family module has ``DESCRIPTION``, ``SHIPPED_DIR`` (its checkpoints inside the package),
``add_arguments(group) -> list of actions`` (its own options) and ``train(args, out) -> exit
status``; ``--steps``, ``--out``, ``--into-package`` and
``--threads`` are shared. Training writes into ``--out`` (default ``rrr-models``); it replaces the
checkpoints shipped inside the package only with ``--into-package``. Flag values are checked by
:mod:`rrrdsl.zoo.flags` before any work.
A new family adds its module to :data:`FAMILIES`. Options of another family than the one
trained are refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import torch

from ..errors import InvalidValueError
from . import flags
from .digits import train as digits_train
from .objects import train as objects_train
from .toy2d import train as toy2d_train

#: family name -> module with DESCRIPTION, add_arguments and train
FAMILIES: dict[str, ModuleType] = {"toy2d": toy2d_train, "digits": digits_train, "objects": objects_train}
#: the family of ``rrr train NAME`` (the 2D zoo, as before families existed)
DEFAULT_FAMILY = "toy2d"
#: where checkpoints go without ``--out`` (the shipped ones only with ``--into-package``)
DEFAULT_OUT = "rrr-models"


class _FamilyAndName(argparse.Action):
    """Split the positionals ``[FAMILY] [NAME]`` into ``args.family`` and ``args.name``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Optional[str] = None) -> None:
        words = list(values)
        family = words.pop(0) if words and words[0] in FAMILIES else DEFAULT_FAMILY
        if len(words) > 1:
            parser.error(f"expected [FAMILY] [NAME], got {' '.join(values)}")
        namespace.family, namespace.name = family, (words[0] if words else None)


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to ``rrr``'s sub-parsers."""
    parser = subparsers.add_parser(
        "train",
        help="train learned diffusion models (2D datasets, digits, objects)",
        description="Train the learned diffusion models of one family of the zoo (ε-prediction, Adam, EMA); "
        "writes checkpoints (.pt + .json) and loss curves. Families: "
        + "; ".join(f"{name}: {module.DESCRIPTION}" for name, module in FAMILIES.items()),
    )
    parser.add_argument(
        "target", nargs="*", action=_FamilyAndName, metavar="FAMILY|NAME",
        help=f"[FAMILY] [NAME]: a family ({', '.join(FAMILIES)}; default {DEFAULT_FAMILY}) and, for toy2d, a named 2D dataset (ring, bar, ...)",
    )
    parser.add_argument("--steps", type=flags.count, default=None, help="optimisation steps, >= 1 (default: the family's)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help=f"output directory (default {DEFAULT_OUT})")
    where.add_argument(
        "--into-package", action="store_true",
        help="write into the package's own checkpoint folder, replacing the shipped models (as `make zoo` / `make digits` do)",
    )
    parser.add_argument("--threads", type=flags.count, default=None, help="torch CPU threads, >= 1 (default: torch's choice)")
    options = {name: module.add_arguments(parser.add_argument_group(f"{name} options")) for name, module in FAMILIES.items()}
    #: family -> (dest, default) of its own options, for train_command to refuse the others'
    family_options = {name: [(action.dest, action.default) for action in actions] for name, actions in options.items()}
    parser.set_defaults(handler=train_command, family_options=family_options)
    return parser


def train_command(args: argparse.Namespace) -> int:
    """Run ``rrr train`` from parsed arguments; return the exit status."""
    foreign = [
        dest for family, options in args.family_options.items() if family != args.family
        for dest, default in options if getattr(args, dest) != default
    ]
    if foreign:
        raise InvalidValueError(
            f"--{foreign[0].replace('_', '-')} is not an option of `rrr train {args.family}`",
            hint=f"see `rrr train --help` for the {args.family} options",
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    family = FAMILIES[args.family]
    out = family.SHIPPED_DIR if args.into_package else Path(args.out or DEFAULT_OUT)
    return family.train(args, out)

