"""The grammar ``grammars/rrr.lark``, its LALR(1) parser, and what is derived from its terminals.

Everything outside the parser that must agree with the grammar's terminals — the reserved
words, the heads that start a statement, the patterns of names, strings and comments that the
statement scan needs — is read here from the built parser, never spelled out again.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from lark import Lark
from lark.lexer import PatternStr


def grammar_text() -> str:
    """``grammars/rrr.lark``, shipped in the wheel as the resource package ``rrrdsl.grammars``."""
    return resources.files("rrrdsl.grammars").joinpath("rrr.lark").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def parser() -> Lark:
    """The LALR(1) parser, built once per process, with two start symbols: ``statement``
    (one line of a program) and ``expression`` (an expression alone, as ``parse_expr`` and the
    REPL read it).

    The basic lexer makes the keywords (``sample``, ``using``, ``plot``, ``show``, ``true``,
    ``false``) reserved everywhere, so they can never be names.
    """
    return Lark(
        grammar_text(), parser="lalr", lexer="basic", start=["statement", "expression"], propagate_positions=True
    )


def pattern(terminal: str) -> str:
    """The regular expression of one of the grammar's terminals."""
    return parser().get_terminal(terminal).pattern.to_regexp()


@functools.lru_cache(maxsize=None)
def keywords() -> dict[str, str]:
    """The reserved words, terminal name -> word: every terminal that is a literal word."""
    name = re.compile(pattern("NAME"))
    return {
        t.name: t.pattern.value
        for t in parser().terminals
        if isinstance(t.pattern, PatternStr) and name.fullmatch(t.pattern.value)
    }


@functools.lru_cache(maxsize=None)
def statement_keywords() -> tuple[str, ...]:
    """The reserved words that can start a statement (``sample``, ``plot``, ``show``)."""
    accepts = parser().parse_interactive(start="statement").accepts()
    return tuple(word for terminal, word in sorted(keywords().items()) if terminal in accepts)


@functools.lru_cache(maxsize=None)
def assign_head() -> re.Pattern[str]:
    """An assignment's ``name =``, with the name as group 1 (after optional blanks)."""
    return re.compile(rf"[ \t]*({pattern('NAME')})[ \t]*{pattern('EQUAL')}")


@functools.lru_cache(maxsize=None)
def statement_head() -> re.Pattern[str]:
    """A line that starts a statement: ``name =``, or a keyword that starts one."""
    words = "|".join(statement_keywords())
    return re.compile(rf"(?:{pattern('NAME')}[ \t]*{pattern('EQUAL')}|(?:{words})\b)")
