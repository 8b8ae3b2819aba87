"""Errors of every stage, under one root :class:`RrrdslError`.

A message reads ``file:line:col: what is wrong``, then the offending source line with a
caret under the column, then (optionally) what was expected and a suggestion::

    ring.rrr:3:17: unknown model 'rnig'
        p = model("rnig") * model("bar")
                  ^
        did you mean 'ring'?
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterable, Optional, TypeVar

#: an error type, kept by :func:`at_argument`
E = TypeVar("E", bound="RrrdslError")


class RrrdslError(Exception):
    """Root of every error raised by rrrdsl.

    Parameters
    ----------
    message
        What is wrong, in words.
    filename, line, column
        Where, when a source text exists (1-based line and column).
    source_line
        The text of that line, shown with a caret under ``column``.
    hint
        What was expected, or a suggestion; printed on its own line.
    """

    kind = "error"
    #: the keyword argument of a leaf (``model("m", label=99)``) at fault, when one is: set where
    #: the argument is checked (:func:`at_argument`), with the ``leaf`` by the model registry, so
    #: that ``rrr run`` places the error at the argument in the script
    argument: Optional[str] = None
    leaf: Optional[object] = None

    def __init__(
        self,
        message: str,
        *,
        filename: Optional[str] = None,
        line: Optional[int] = None,
        column: Optional[int] = None,
        source_line: Optional[str] = None,
        hint: Optional[str] = None,
    ) -> None:
        self.message = message
        self.filename = filename
        self.line = line
        self.column = column
        self.source_line = source_line
        self.hint = hint
        super().__init__(self.format())

    def with_location(
        self,
        *,
        filename: Optional[str] = None,
        line: Optional[int] = None,
        column: Optional[int] = None,
        source_line: Optional[str] = None,
    ) -> "RrrdslError":
        """Return a copy of this error that also says where (missing fields are kept)."""
        return type(self)(
            self.message,
            filename=self.filename if filename is None else filename,
            line=self.line if line is None else line,
            column=self.column if column is None else column,
            source_line=self.source_line if source_line is None else source_line,
            hint=self.hint,
        )

    def format(self, paint: Optional[Callable[[str], str]] = None) -> str:
        """The full message: location prefix, source line with caret, hint. ``paint`` colours
        the source line (the REPL's syntax highlighting at a terminal); it must not change the
        line's visible width, so that the caret stays under the column."""
        where = []
        if self.filename is not None:
            where.append(self.filename)
        if self.line is not None:
            where.append(str(self.line))
            if self.column is not None:
                where.append(str(self.column))
        head = (":".join(where) + ": " if where else "") + self.message
        parts = [head]
        if self.source_line is not None:
            text = self.source_line.rstrip("\n").expandtabs(1)
            parts.append("    " + (paint(text) if paint is not None else text))
            if self.column is not None:
                parts.append("    " + " " * max(self.column - 1, 0) + "^")
        if self.hint:
            parts.append("    " + self.hint)
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.format()

    def __reduce__(self):  # keep keyword arguments through pickling (multiprocessing, pytest-xdist)
        return (
            _rebuild,
            (type(self), self.message, self.filename, self.line, self.column, self.source_line, self.hint),
        )


def _rebuild(cls, message, filename, line, column, source_line, hint):
    return cls(message, filename=filename, line=line, column=column, source_line=source_line, hint=hint)


class RrrdslSyntaxError(RrrdslError):
    """Text that does not follow the grammar."""


class UnknownNameError(RrrdslError):
    """An unbound identifier, an unknown function, model, sampler or option."""


class InvalidValueError(RrrdslError):
    """A well-formed value that is out of range: a non-finite exponent, a weight <= 0, ..."""


class ShapeError(RrrdslError):
    """Dimensions that do not agree: leaves of different dims, a crop outside the canvas."""


class CompileError(RrrdslError):
    """A graph that cannot become an annealed target (energy needed from a score-only leaf, improper density)."""


class CheckpointError(RrrdslError):
    """A checkpoint file that is missing, truncated, foreign or inconsistent."""


class SamplerError(RrrdslError):
    """Sampler options that are unknown or out of range, or a sampler that cannot run on a target.

    ``option`` names the option at fault, when one is (``rrr run`` places the error at it).
    """

    option: Optional[str] = None


def at_argument(error: E, key: str) -> E:
    """``error``, marked as the fault of the keyword argument ``key`` of a leaf."""
    error.argument = key
    return error


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> Optional[str]:
    """A 'did you mean ...?' hint naming the closest candidates, or None when nothing is close."""
    names = sorted(set(candidates))
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"
