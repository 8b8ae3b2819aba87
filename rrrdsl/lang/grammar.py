"""The grammar ``grammars/rrr.lark``, its LALR(1) parser, and what is derived from its terminals.

Everything outside the parser that must agree with the grammar's terminals — the reserved
words, the heads that start a statement, the patterns of names, strings and comments that the
statement scan needs — is read here from the built parser, never spelled out again.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from typing import Iterator, NamedTuple, Optional

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters
from lark.lexer import BasicLexer, LexerState, PatternStr


def grammar_text() -> str:
    """``grammars/rrr.lark``, shipped in the wheel as the resource package ``rrrdsl.grammars``."""
    return resources.files("rrrdsl.grammars").joinpath("rrr.lark").read_text(encoding="utf-8")


class _Lexer(BasicLexer):
    """lark's basic lexer with the same tokens, in one compiled alternation and a tight loop
    (half of lark's per-token cost, which dominates parsing long expressions).

    Terminals are tried in lark's order; a keyword is a NAME whose text is a reserved word,
    as lark's own ``unless`` callback makes it; lines are counted in the terminals that lark
    finds may hold a newline.
    """

    __future_interface__ = 2  # lex(state, parser_state), with the text as a lark TextSlice

    def __init__(self, conf: object) -> None:
        super().__init__(conf)  # type: ignore[arg-type]
        name = re.compile(self.terminals_by_name["NAME"].pattern.to_regexp())
        self.words = {
            t.pattern.value: t.name
            for t in self.terminals
            if isinstance(t.pattern, PatternStr) and name.fullmatch(t.pattern.value)
        }
        kept = [t for t in self.terminals if t.pattern.value not in self.words]
        self.master = re.compile("|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in kept))

    def lex(self, state: LexerState, parser_state: object) -> Iterator[Token]:
        text, position, end = state.text.text, state.text.start, state.text.end
        master, words, ignored, multiline = self.master, self.words, self.ignore_types, self.newline_types
        line, line_start = 1, 0
        while position < end:
            match = master.match(text, position, end)
            column = position - line_start + 1
            if match is None:
                allowed = {t.name for t in self.terminals} - ignored
                raise UnexpectedCharacters(text, position, line, column, allowed=allowed, state=parser_state)
            kind, value, after = match.lastgroup, match.group(), match.end()
            first_line = line
            if kind in multiline and "\n" in value:
                line, line_start = line + value.count("\n"), position + value.rindex("\n") + 1
            if kind not in ignored:
                kind = words.get(value, kind) if kind == "NAME" else kind
                yield Token(kind, value, position, first_line, column, line, after - line_start + 1, after)
            position = after


class Span:
    """Where a parse tree lies in the text: from its first token to the end of its last one.

    Found when asked (a walk down the tree's edge), rather than for every node while parsing
    as lark's ``propagate_positions`` does, at a quarter of the parse; positions are needed
    for statements and for errors only. A tree without tokens (``[]``) has no position.
    """

    __slots__ = ("tree",)

    def __init__(self, tree: Tree) -> None:
        self.tree = tree

    def _edge(self, last: bool) -> Optional[Token]:
        stack: list = [self.tree]
        while stack:
            node = stack.pop()
            if isinstance(node, Token):
                return node
            stack.extend(node.children if last else reversed(node.children))
        return None

    @property
    def empty(self) -> bool:
        return self._edge(last=False) is None

    @property
    def line(self) -> Optional[int]:
        return getattr(self._edge(last=False), "line", None)

    @property
    def column(self) -> Optional[int]:
        return getattr(self._edge(last=False), "column", None)

    @property
    def end_line(self) -> Optional[int]:
        return getattr(self._edge(last=True), "end_line", None)

    @property
    def end_column(self) -> Optional[int]:
        return getattr(self._edge(last=True), "end_column", None)


class SpannedTree(Tree):
    """A lark parse tree whose ``meta`` is its :class:`Span`."""

    @property
    def meta(self) -> Span:  # type: ignore[override]
        return Span(self)


@functools.lru_cache(maxsize=None)
def parser() -> Lark:
    """The LALR(1) parser, built once per process, with two start symbols: ``statement``
    (one line of a program) and ``expression`` (an expression alone, as ``parse_expr`` and the
    REPL read it).

    The lexer (lark's basic lexer, faster) makes the keywords (``sample``, ``using``,
    ``plot``, ``show``, ``true``, ``false``) reserved everywhere, so they can never be names.
    """
    return Lark(
        grammar_text(), parser="lalr", lexer=_Lexer, start=["statement", "expression"], tree_class=SpannedTree
    )


def pattern(terminal: str) -> str:
    """The regular expression of one of the grammar's terminals."""
    return parser().get_terminal(terminal).pattern.to_regexp()


class Lexeme(NamedTuple):
    """One piece of a text: the terminal that matched it (``""`` for text that no terminal
    matches), its text, and its offset."""

    kind: str
    text: str
    start: int


#: what no terminal matches: an unterminated string (as the statement scan reads it) or a character
_UNMATCHED = re.compile(r'"[^\n\r]*|[\s\S]')


@functools.lru_cache(maxsize=None)
def _lexer() -> _Lexer:
    return _Lexer(parser().lexer_conf)


def lexemes(text: str) -> Iterator[Lexeme]:
    """Every piece of ``text`` in order, as the parser's lexer cuts it, for tools that keep
    what the parser ignores (highlighting, formatting): keywords under their own terminal,
    whitespace and comments under theirs. Never raises: where no terminal matches, an
    unterminated string (to the end of its line) or else one character is a piece of kind
    ``""``. The pieces join back to ``text``.
    """
    lexer = _lexer()
    position = 0
    while position < len(text):
        match = lexer.master.match(text, position) or _UNMATCHED.match(text, position)
        kind, value = match.lastgroup or "", match.group()  # type: ignore[union-attr]
        yield Lexeme(lexer.words.get(value, kind) if kind == "NAME" else kind, value, position)
        position = match.end()  # type: ignore[union-attr]


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
