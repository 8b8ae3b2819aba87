"""``rrr train [FAMILY] [NAME] [options]``: train the learned models of one family of the zoo.

=========  ====================================================================================
family     trains
=========  ====================================================================================
toy2d      (the default) an energy or score model of a named 2D dataset, or the whole shipped
           2D zoo with ``--zoo`` (:mod:`rrrdsl.zoo.toy2d.train`)
digits     the digits backbone, guidance classifier and evaluator (:mod:`rrrdsl.zoo.digits.train`)
=========  ====================================================================================

Every family module has ``DESCRIPTION``, ``add_arguments(group) -> list of actions`` (its own
options) and ``train(args) -> exit status``; ``--steps``, ``--out`` and ``--threads`` are shared.
A new family adds its module to :data:`FAMILIES`. Options of another family than the one
trained are refused.
"""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any, Optional

import torch

from ..errors import InvalidValueError
from .digits import train as digits_train
from .toy2d import train as toy2d_train

#: family name -> module with DESCRIPTION, add_arguments and train
FAMILIES: dict[str, ModuleType] = {"toy2d": toy2d_train, "digits": digits_train}
#: the family of ``rrr train NAME`` (the 2D zoo, as before families existed)
DEFAULT_FAMILY = "toy2d"


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
        help="train learned diffusion models (2D datasets, digits)",
        description="Train the learned diffusion models of one family of the zoo (ε-prediction, Adam, EMA); "
        "writes checkpoints (.pt + .json) and loss curves. Families: "
        + "; ".join(f"{name}: {module.DESCRIPTION}" for name, module in FAMILIES.items()),
    )
    parser.add_argument(
        "target", nargs="*", action=_FamilyAndName, metavar="FAMILY|NAME",
        help=f"[FAMILY] [NAME]: a family ({', '.join(FAMILIES)}; default {DEFAULT_FAMILY}) and, for toy2d, a named 2D dataset (ring, bar, ...)",
    )
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the family's)")
    parser.add_argument("--out", default=None, help="output directory (default: the family's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
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
    return FAMILIES[args.family].train(args)

