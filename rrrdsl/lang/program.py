"""A lowered ``.rrr`` program: plain, immutable statements with their source positions.

:func:`rrrdsl.parse` returns a :class:`Program`; a runner (``rrr run``) or the REPL executes
its statements in order. Nothing here evaluates anything: every expression is already an
energy graph (:class:`~rrrdsl.lang.ir.Expr`) or, for numbers bound by assignment, a float.

==================================================================  ===================
text                                                                statement
==================================================================  ===================
``p = model("ring") * model("bar")``                                :class:`Assign`
``sample p using mala(step_size=0.1) n=1000 seed=0 -> "p.npz"``     :class:`Sample`
``plot p -> "p.png"``                                               :class:`Plot`
``show p``                                                          :class:`Show`
``load "sd15" as "sd" levels=50``                                   :class:`Load`
==================================================================  ===================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional, Union

from .ir import Expr, Leaf, Value

#: what a name can be bound to: an energy graph or a number
Binding = Union[Expr, float]
#: where the parts of a ``sample``/``plot`` are in the source: ``(part, line, column)`` for
#: ``"out"`` (the path's string), ``"n"``, ``"seed"`` and each sampler option by its name
Places = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class Assign:
    """``name = value``: binds ``name`` for the statements that follow."""

    name: str
    value: Binding
    line: int
    column: int


@dataclass(frozen=True)
class Sample:
    """``sample EXPR [using SAMPLER(opt=value, ...)] [n=INT] [seed=INT] [-> "path"]``.

    ``target_name`` is the identifier when ``EXPR`` is a bare name (else None); ``sampler``,
    ``n``, ``seed`` and ``out`` are None when not given (the runner picks defaults).
    ``options`` are the sampler's ``(key, value)`` pairs in source order, kept as data: the
    sampler validates them.
    """

    expr: Expr
    target_name: Optional[str]
    sampler: Optional[str]
    options: tuple[tuple[str, Value], ...]
    n: Optional[int]
    seed: Optional[int]
    out: Optional[str]
    line: int
    column: int
    places: Places = field(default=(), compare=False)


@dataclass(frozen=True)
class Plot:
    """``plot EXPR [-> "path.png"]``: draw the density (and samples, once there are any)."""

    expr: Expr
    target_name: Optional[str]
    out: Optional[str]
    line: int
    column: int
    places: Places = field(default=(), compare=False)


@dataclass(frozen=True)
class Show:
    """``show EXPR``: print the canonical graph (or the number) of ``EXPR``."""

    expr: Binding
    target_name: Optional[str]
    line: int
    column: int


@dataclass(frozen=True)
class Load:
    """``load "FOLDER" as "NAME" [key=value ...]``: ``model("NAME", ...)`` is the diffusers pipeline
    in ``FOLDER`` (relative to the script's folder), with ``options`` among :data:`LOAD_OPTIONS`,
    in source order. The runner checks the folder (configs only) and registers the name; the
    places are those of ``"path"``, ``"name"`` and each option."""

    path: str
    name: str
    options: tuple[tuple[str, Value], ...]
    line: int
    column: int
    places: Places = field(default=(), compare=False)


#: the options of ``load`` (those of :func:`rrrdsl.register_diffusers`)
LOAD_OPTIONS = ("levels", "max_batch", "dtype")

Statement = Union[Assign, Sample, Plot, Show, Load]


def place(statement: Statement, part: str) -> tuple[int, int]:
    """``(line, column)`` of a part of a statement (``"out"``, ``"n"``, ``"seed"``, an option
    name; see :data:`Places`), or of the statement itself when the part is not written."""
    for name, line, column in getattr(statement, "places", ()):
        if name == part:
            return line, column
    return statement.line, statement.column


@dataclass(frozen=True)
class Program:
    """The statements of one source text, in order, and the names they bind.

    ``bindings`` maps every name assigned (or given initially, as the REPL does) to its
    final value; ``arguments`` where each leaf's keyword arguments are written (its first call).
    """

    statements: tuple[Statement, ...]
    source: str
    filename: Optional[str] = None
    bindings: Mapping[str, Binding] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    arguments: Mapping[Leaf, Places] = field(default_factory=lambda: MappingProxyType({}), compare=False)

    def argument_place(self, leaf: object, key: Optional[str]) -> Optional[tuple[int, int]]:
        """``(line, column)`` of the keyword argument ``key`` of ``leaf`` in this program, or None."""
        for name, line, column in self.arguments.get(leaf, ()) if isinstance(leaf, Leaf) else ():
            if name == key:
                return line, column
        return None
