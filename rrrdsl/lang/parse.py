"""Text -> :class:`~rrrdsl.lang.program.Program`: split, parse (lark LALR), lower.

A newline outside brackets ends a statement. :func:`parse` first splits the text at those
newlines with a bracket-, string- and comment-aware scan, then parses every statement with
one LALR(1) parser (built once; positions from :class:`~rrrdsl.lang.grammar.Span`) and lowers it
(:mod:`rrrdsl.lang.lower`) in order. Parsing statement by statement lets :func:`check`
report every error of a file: after a syntax error the scan resumes at the next statement,
and a name whose assignment failed is remembered so that its uses are not reported again.

Syntax errors say what was expected in words (``expected `)` to close the `(` opened at
3:9``), never in lark's terminal names. Every error carries file, line, column, the source
line and a caret; nothing from lark or Python escapes.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import gc
import re
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Iterator, Mapping, Optional, Union

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ..errors import RrrdslError, RrrdslSyntaxError
from ..files import read_limited
from . import algebra, grammar
from .lower import Cascade, Lowerer, Source, Subject
from .nodes import Expr
from .program import Binding, Program, Show, Statement

__all__ = ["parse", "parse_expr", "parse_show", "check", "read_source"]

#: largest ``.rrr`` file read (``rrr check``, ``rrr run``, the REPL's ``:load``): 1 MB
MAX_SOURCE_BYTES = 1_000_000

# --- splitting a program into statements --------------------------------------------------

_DEPTH = {"(": 1, "[": 1, ")": -1, "]": -1}


@functools.lru_cache(maxsize=None)
def _scan() -> re.Pattern[str]:
    """What the statement scan must see: strings (possibly unterminated: the rest of the
    line), comments, brackets and newlines; strings and comments as the grammar spells them."""
    return re.compile(rf'{grammar.pattern("STRING")}|"[^\n\r]*|{grammar.pattern("COMMENT")}|[()\[\]\n]')


@functools.lru_cache(maxsize=None)
def blank() -> re.Pattern[str]:
    """Whatever the grammar ignores (whitespace, comments), as between statements."""
    ignored = "|".join(grammar.pattern(name) for name in grammar.parser().ignore_tokens)
    return re.compile(f"(?:{ignored})*")


def statement_end(text: str, start: int) -> int:
    """Offset of the newline that ends the statement starting at ``start`` (or ``len(text)``)."""
    depth = 0
    for match in _scan().finditer(text, start):
        token = match.group()
        if token == "\n":
            if depth == 0:
                return match.start()
        else:
            depth = max(depth + _DEPTH.get(token, 0), 0)
    return len(text)


class _Lines:
    """Line starts of a text: offset <-> 1-based line number."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)

    def start_of(self, line: int) -> int:
        return self.starts[line - 1] if line <= len(self.starts) else len(self.text)


# --- syntax errors in words ---------------------------------------------------------------

_EXPRESSION = 'an expression, such as a number, a name or model("...")'
_VALUE = "a value: a number, a string, a list [...] or true/false"
_STATEMENT = "a statement: `name = ...`, `sample ...`, `plot ...` or `show ...`"
_OPERATOR = "an operator (`*`, `/`, `**`, `+`, `-`)"
_OPERATORS = ("STAR", "SLASH", "POW", "PLUS", "MINUS")
_CLOSERS = {"LPAR": ("(", ")", "RPAR"), "LSQB": ("[", "]", "RSQB")}
#: every other terminal of the grammar, in words
WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string in double quotes",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "COMMA": "`,`",
    "EQUAL": "`=`",
    "COLON": "`:` (a range is start:stop)",
    "ARROW": '`-> "path"`',
    "SAMPLE": "`sample`",
    "USING": "`using` and a sampler",
    "PLOT": "`plot`",
    "SHOW": "`show`",
    "LOAD": "`load`",
    "AS": '`as "name"`',
    "TRUE": "`true`",
    "FALSE": "`false`",
    **{name: _OPERATOR for name in _OPERATORS},
}
# parse-tree nodes that are complete expressions (a subject is one): an operator may follow them
_OPERANDS = {"name", "number", "call", "neg", "pow", "product", "sum", "subject"}


def expected_words(
    accepts: Iterable[str], stack: list, end_words: str = "a newline after the statement"
) -> str:
    """What the parser could accept next, in words: ``expected A, B or C``.

    ``stack`` is the parser's value stack: an unclosed bracket on it is named with its
    position, and a complete expression on top means an operator could follow.
    """
    accepts = set(accepts)
    phrases: list[str] = []
    opened = [v for v in stack if isinstance(v, Token) and v.type in _CLOSERS]
    if opened:
        bracket, closer, terminal = _CLOSERS[opened[-1].type]
        if terminal in accepts:
            phrases.append(f"`{closer}` to close the `{bracket}` opened at {opened[-1].line}:{opened[-1].column}")
            accepts.discard(terminal)
    if {"SAMPLE", "PLOT", "SHOW"} <= accepts:
        phrases.append(_STATEMENT)
        accepts -= {"NAME", "SAMPLE", "PLOT", "SHOW"}
    if {"NAME", "NUMBER"} <= accepts:
        phrases.append(_EXPRESSION)
        accepts -= {"NAME", "NUMBER", "LPAR", "MINUS"}
    elif {"NUMBER", "LSQB"} <= accepts:
        phrases.append(_VALUE)
        accepts -= {"NUMBER", "MINUS", "STRING", "LSQB", "TRUE", "FALSE"}
    top = stack[-1] if stack else None
    if accepts & set(_OPERATORS) or (isinstance(top, Tree) and top.data in _OPERANDS):
        phrases.append(_OPERATOR)
        accepts -= set(_OPERATORS) | {"LPAR"}
    end = "$END" in accepts
    accepts.discard("$END")
    for name in sorted(accepts):
        phrase = WORDS.get(name, "more input")
        if phrase not in phrases:
            phrases.append(phrase)
    if end:
        phrases.append(end_words)
    if not phrases:
        return "expected nothing more here"
    return "expected " + (phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1])


def _describe(token: Token) -> str:
    text = str(token) if len(token) <= 40 else str(token)[:37] + "..."
    if token.type == "NAME":
        return f"name `{text}`"
    if token.type == "NUMBER":
        return f"number {text}"
    if token.type == "STRING":
        return f"string {text}"
    if token.type in grammar.keywords():
        return f"keyword `{text}`"
    return f"`{text}`"


def _syntax_error(error: UnexpectedInput, at_eof: bool, expression: bool) -> RrrdslSyntaxError:
    """A lark error as :class:`RrrdslSyntaxError` with its position (no source line yet)."""
    interactive = getattr(error, "interactive_parser", None)
    stack = list(interactive.parser_state.value_stack) if interactive is not None else []
    accepts = interactive.accepts() if interactive is not None else set()
    end_words = "the end of the expression" if expression else "a newline after the statement"
    hint = expected_words(accepts, stack, end_words)
    opened = any(isinstance(v, Token) and v.type in _CLOSERS for v in stack)
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            where = "expression" if expression else "file" if at_eof and opened else "line"
            return RrrdslSyntaxError(f"unexpected end of the {where}", line=token.end_line, column=token.end_column, hint=hint)
        if token.type == "EQUAL" and len(stack) == 1 and isinstance(stack[0], Token) and stack[0].type in grammar.keywords():
            keyword = stack[0]
            message = f"cannot assign to `{keyword}`: it is a keyword"
            return RrrdslSyntaxError(message, line=keyword.line, column=keyword.column, hint="choose another name")
        message = f"unexpected {_describe(token)}"
        if token.type in grammar.keywords() and "NAME" in accepts:
            hint = f"`{token}` is a keyword, not a name; " + hint
        if token.type in ("RPAR", "RSQB") and not opened:
            message = f"unmatched `{token}`: no bracket is open"
        return RrrdslSyntaxError(message, line=token.line, column=token.column, hint=hint)
    if isinstance(error, UnexpectedCharacters):
        if error.char == '"':
            message, hint = "unterminated string", 'a string must end with `"` on the same line'
        else:
            message = f"unexpected character {error.char!r}"
        return RrrdslSyntaxError(message, line=error.line, column=error.column, hint=hint)
    return RrrdslSyntaxError("invalid syntax", line=getattr(error, "line", None), column=getattr(error, "column", None))


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while parsing and lowering.

    A long expression allocates hundreds of thousands of tokens, trees and nodes that are all
    alive until the end (none is cyclic garbage); the collector's full passes over them grow
    with their number, which made parsing superlinear (10,000 leaves: 0.5 s of 1.8 s).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_tree(padded: str, start: str, at_eof: bool) -> Union[Tree, Token]:
    try:
        return grammar.parser().parse(padded, start=start)
    except UnexpectedInput as error:
        raise _syntax_error(error, at_eof, expression=start == "expression") from None
    except RecursionError:
        raise RrrdslSyntaxError("expression nested too deeply") from None


# --- programs -----------------------------------------------------------------------------


@_no_cycle_collection()
def _run(
    text: str, filename: Optional[str], bindings: Optional[Mapping[str, Binding]]
) -> tuple[Program, list[RrrdslError]]:
    """Parse and lower every statement of ``text``; collect errors instead of stopping."""
    if not isinstance(text, str):
        raise TypeError(f"rrrdsl source must be str, not {type(text).__name__}")
    source = Source.of(text, filename)
    lines = _Lines(text)
    lowerer = Lowerer(source, bindings)
    statements: list[Statement] = []
    errors: list[RrrdslError] = []
    position = 0
    while True:
        position = blank().match(text, position).end()  # type: ignore[union-attr]
        if position >= len(text):
            break
        line = lines.line_of(position)
        start = lines.start_of(line)
        end = statement_end(text, start)
        try:
            tree = _parse_tree("\n" * (line - 1) + text[start:end], "statement", end == len(text))
            statements.append(lowerer.lower(tree))  # type: ignore[arg-type]
            position = end + 1
        except (RrrdslError, Cascade) as error:
            if isinstance(error, RrrdslError):
                errors.append(source.locate(error))
            position = _resume(text, lines, error, line, end) if isinstance(error, RrrdslSyntaxError) else end + 1
            head = grammar.assign_head().match(text, start, end)
            if head:  # a failed assignment: its name's uses are skipped, not reported again
                lowerer.poison(head.group(1))
    program = Program(tuple(statements), text, filename, MappingProxyType(lowerer.bindings), MappingProxyType(lowerer.arguments))
    return program, errors


def _resume(text: str, lines: _Lines, error: RrrdslError, line: int, end: int) -> int:
    """Where to continue after a syntax error in the statement at ``line`` ending at ``end``.

    An unclosed bracket makes a statement swallow the lines after it, so the scan resumes
    at the first line from the error on that starts, unindented, like a new statement
    (``name =``, ``sample``, ``plot``, ``show``); otherwise after the statement.
    """
    first = max(error.line or line, line + 1)
    for candidate in range(first, lines.line_of(end) + 1):
        if grammar.statement_head().match(text, lines.start_of(candidate)):
            return lines.start_of(candidate)
    return end + 1


def parse(text: str, filename: Optional[str] = None, *, bindings: Optional[Mapping[str, Binding]] = None) -> Program:
    """Parse and lower a ``.rrr`` program.

    Parameters
    ----------
    text
        The program: one statement per line (an expression continues across lines inside
        brackets), ``#`` comments.
    filename
        Shown in error messages (``<string>`` when None).
    bindings
        Names bound before the first statement (a REPL session's).

    Returns
    -------
    Program
        The lowered statements in order and the final bindings.

    Raises
    ------
    RrrdslError
        The first error of the program (a subclass: syntax, unknown name, invalid value),
        with file, line, column, the source line and a caret.
    """
    program, errors = _run(text, filename, bindings)
    if errors:
        raise errors[0]
    return program


def check(text: str, filename: Optional[str] = None) -> list[RrrdslError]:
    """Every error of a program, in source order (empty when it is valid)."""
    return _run(text, filename, None)[1]


@_no_cycle_collection()
def _subject(text: str, filename: Optional[str], bindings: Optional[Mapping[str, Binding]]) -> tuple[Source, Subject]:
    """Parse and lower one expression (start symbol ``expression``), blank lines around it allowed."""
    if not isinstance(text, str):
        raise TypeError(f"rrrdsl source must be str, not {type(text).__name__}")
    source = Source.of(text, filename)
    lines = _Lines(text)
    position = blank().match(text).end()  # type: ignore[union-attr]
    if position >= len(text):
        raise source.locate(RrrdslSyntaxError("empty expression", line=1, column=1, hint="expected " + _EXPRESSION))
    line = lines.line_of(position)
    start = lines.start_of(line)
    end = statement_end(text, start)
    rest = blank().match(text, end).end()  # type: ignore[union-attr]
    if rest < len(text):
        line = lines.line_of(rest)
        error = RrrdslSyntaxError(
            "unexpected text after the expression",
            line=line,
            column=rest - lines.start_of(line) + 1,
            hint="an expression ends at the end of its line; continue it inside parentheses",
        )
        raise source.locate(error)
    try:
        tree = _parse_tree("\n" * (line - 1) + text[start:end], "expression", True)
    except RrrdslSyntaxError as error:
        raise source.locate(error) from None
    return source, Lowerer(source, bindings).lower(tree)  # type: ignore[return-value]


def parse_expr(text: str) -> Expr:
    """Parse one expression into its canonical energy graph.

    ``parse_expr('model("dog") * model("hat") ** 2 / model("cartoon")')`` equals the same
    expression written in Python, and ``parse_expr(str(g)) == g`` for every graph ``g``.
    """
    source, subject = _subject(text, None, None)
    if isinstance(subject.value, Expr):
        return subject.value
    try:
        return algebra.constant(subject.value)
    except RrrdslError as error:
        raise source.locate(error, subject.line, 1) from None


def parse_show(text: str, filename: Optional[str] = None, *, bindings: Optional[Mapping[str, Binding]] = None) -> Show:
    """An expression typed alone (as at the REPL), as the :class:`Show` statement that prints it.

    The text is parsed with the grammar's ``expression`` start symbol, so error columns are
    those of ``text``; ``bindings`` are the names it may use.
    """
    _, subject = _subject(text, filename, bindings)
    return Show(subject.value, subject.name, subject.line, subject.column)


def read_source(path: Union[str, Path]) -> str:
    """The text of a ``.rrr`` file (UTF-8, an optional BOM); a file that is not UTF-8 is a
    :class:`RrrdslSyntaxError` at the first bad byte, one over :data:`MAX_SOURCE_BYTES` an
    :class:`InvalidValueError`. ``OSError`` when it cannot be read."""
    data = read_limited(path, MAX_SOURCE_BYTES)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RrrdslSyntaxError(
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x})", filename=str(path), line=line, column=column
        ) from None
