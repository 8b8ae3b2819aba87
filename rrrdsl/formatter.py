"""``rrr fmt``: one layout for every ``.rrr`` program, comments and blank lines kept, meaning unchanged.

The formatter reprints a program's tokens (the grammar's own lexer,
:func:`rrrdsl.lang.grammar.lexemes`) in the spacing of the canonical printer
(:mod:`rrrdsl.lang.printer`): one space around binary operators, ``**``, ``->`` and an
assignment's ``=``; none inside brackets, before ``,`` or after a unary ``-``, in ``key=value``
and in a range ``0:8``; a call's ``(`` against its name. It changes only layout, never a token:
the graph printer itself cannot serve, since it would inline the program's names and fold its
numbers. Statements start in column 1; a line that continues an expression inside brackets is
indented four spaces per open bracket (one fewer when it starts by closing one); a comment after
code is set two spaces off; runs of blank lines become one, and none lead or trail; lines end
in ``\\n``.

Only a program without errors is formatted, and the result is parsed again: its statements
must equal the original's, positions aside (the same graphs, samplers, options and outputs),
or nothing is written (:class:`FormatError`). Formatting is idempotent (property-tested in
``tests/test_formatter.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Optional, Union

from .errors import RrrdslError
from .files import write_atomic
from .lang import grammar
from .lang.parse import parse, read_source
from .lang.program import Program, Statement

__all__ = ["FormatError", "format_text", "format_file"]

INDENT = "    "
_OPENERS, _CLOSERS = {"LPAR", "LSQB"}, {"RPAR", "RSQB"}
#: tokens that end an operand: a `-` after one is binary, elsewhere unary
_OPERAND_ENDS = {"NAME", "NUMBER", "STRING", "TRUE", "FALSE", *_CLOSERS}
_NO_SPACE_BEFORE = {"COMMA", "COLON", *_CLOSERS}


class FormatError(RrrdslError):
    """The formatted text would not mean what the original means; nothing was written."""


class _Layout:
    """The output lines of :func:`_layout`, built token by token."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.line: list[str] = []
        self.blank = False  # a blank line is due before the next line

    def start(self, indent: int) -> None:
        if self.blank and self.lines:
            self.lines.append("")
        self.blank = False
        self.line = [INDENT * indent]

    def end(self, newlines: int) -> None:
        if len(self.line) > 1:
            self.lines.append("".join(self.line))
        self.line = []
        self.blank = self.blank or newlines > 1


def _layout(text: str) -> str:
    """``text`` with the formatter's layout (it must lex; :func:`format_text` checks the rest)."""
    out = _Layout()
    ignored = grammar.parser().ignore_tokens
    depth = 0
    previous: Optional[str] = None  # the statement's previous token kind, None at its start
    tight = False  # no space after the previous token (an opener, a unary `-`, `key=`, `:`)
    count = 0  # tokens so far in the statement: its `=` is an assignment's as token 2
    for kind, value, _ in grammar.lexemes(text):
        if kind == "COMMENT":
            if out.line:
                out.line.append("  " + value.rstrip())
            else:
                out.start(depth)
                out.line.append(value.rstrip())
            continue
        if kind in ignored:
            newlines = value.count("\n")
            if newlines:
                out.end(newlines)
                if depth == 0:
                    previous, tight, count = None, False, 0
            continue
        keyword_equal = kind == "EQUAL" and not (count == 1 and depth == 0 and previous == "NAME")
        if not out.line:
            out.start(depth - (kind in _CLOSERS))
        elif not (tight or keyword_equal or kind in _NO_SPACE_BEFORE or (kind == "LPAR" and previous == "NAME")):
            out.line.append(" ")
        out.line.append(value)
        count += 1
        tight = kind in _OPENERS or kind == "COLON" or keyword_equal or (kind == "MINUS" and previous not in _OPERAND_ENDS)
        depth = max(depth + (kind in _OPENERS) - (kind in _CLOSERS), 0)
        previous = kind
    out.end(0)
    return "".join(line + "\n" for line in out.lines)


def _meaning(program: Program) -> tuple[Statement, ...]:
    """A program's statements without their positions: what formatting must not change."""
    return tuple(dataclasses.replace(s, line=0, column=0) for s in program.statements)


def format_text(text: str, filename: Optional[str] = None) -> str:
    """The program ``text`` in the formatter's layout.

    Raises
    ------
    RrrdslError
        The program's first error (it is not formatted), or :class:`FormatError` if the
        formatted text would not parse to the same statements.
    """
    before = parse(text, filename)
    formatted = _layout(text)
    try:
        same = _meaning(parse(formatted, filename)) == _meaning(before)
    except RrrdslError:
        same = False
    if not same:
        raise FormatError(
            "formatting would change what this program means; it was left as it is",
            filename=filename,
            hint="this is a bug in rrr fmt: please report it with the file",
        )
    return formatted


def format_file(path: Union[str, Path], *, write: bool) -> str:
    """Format one file: the unified diff of what changes (``""`` when it is already formatted).

    With ``write`` a changed file is replaced atomically, keeping its permissions (a link is
    followed: its target is rewritten). A byte-order mark and ``\\r\\n`` line ends count as
    changes. Raises ``OSError`` when the file cannot be read or written and
    :class:`RrrdslError` for a program with errors.
    """
    name = str(path)
    text = read_source(path)
    formatted = format_text(text, name)
    if formatted.encode("utf-8") == Path(path).read_bytes():
        return ""
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True), formatted.splitlines(keepends=True), name, f"{name} (formatted)"
        )
    )
    if write:
        target = Path(path).resolve()
        write_atomic(target, formatted.encode("utf-8"), mode=os.stat(target).st_mode & 0o7777)
    return diff or f"--- {name}\n+++ {name} (formatted)\n(only the byte-order mark or line ends change)\n"
