"""A Pygments lexer for ``.rrr`` programs, read from the grammar's own lexer so that it cannot drift.

:class:`RrrLexer` (aliases ``rrr`` and ``rrrdsl``, files ``*.rrr``) is registered through the
``pygments.lexers`` entry point, so ``pygmentize -l rrr``, Sphinx and IPython find it once
rrrdsl is installed. It cuts the text with :func:`rrrdsl.lang.grammar.lexemes`, the parser's
lexer with whitespace and comments kept, and gives each terminal of ``grammars/rrr.lark`` a
token type: a new keyword of the grammar is a keyword here without any edit, and a new
terminal without a type in :data:`TOKEN_TYPES` fails ``tests/test_highlight.py``. Names are
refined by where they stand: a leaf function (``model``, ``crop``, ...) is a builtin, the name
after ``using`` a function (the sampler), ``name =`` starting a statement a variable and
``key=`` elsewhere an attribute (an argument or option). Text that no terminal matches (a stray
character, an unterminated string) is an ``Error`` token.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from pygments import highlight
from pygments.formatters import TerminalFormatter
from pygments.lexer import Lexer
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String, Whitespace
from pygments.token import _TokenType

from .lang import grammar
from .lang.functions import FUNCTIONS
from .lang.grammar import Lexeme

__all__ = ["RrrLexer", "TOKEN_TYPES", "token_type", "paint_terminal"]

#: the token type of each terminal of the grammar; a keyword that is not listed is a Keyword,
#: an ignored terminal that is not listed is whitespace
TOKEN_TYPES: dict[str, _TokenType] = {
    "NAME": Name,
    "NUMBER": Number,
    "STRING": String.Double,
    "COMMENT": Comment.Single,
    "TRUE": Keyword.Constant,
    "FALSE": Keyword.Constant,
    **dict.fromkeys(("POW", "STAR", "SLASH", "PLUS", "MINUS", "ARROW", "EQUAL", "COLON"), Operator),
    **dict.fromkeys(("LPAR", "RPAR", "LSQB", "RSQB", "COMMA"), Punctuation),
}

_DEPTH = {"LPAR": 1, "LSQB": 1, "RPAR": -1, "RSQB": -1}


def token_type(kind: str) -> _TokenType:
    """The token type of a lexeme's terminal (``""``, text that no terminal matches: ``Error``)."""
    if kind in TOKEN_TYPES:
        return TOKEN_TYPES[kind]
    if kind in grammar.keywords():
        return Keyword
    if kind in grammar.parser().ignore_tokens:
        return Whitespace
    return Error


def _name_type(pieces: Sequence[Lexeme], index: int, statement_head: bool, after_using: bool) -> _TokenType:
    """A name refined by its neighbours: builtin, sampler, assigned variable or keyword argument."""
    if pieces[index].text in FUNCTIONS:
        return Name.Builtin
    if after_using:
        return Name.Function
    ignored = grammar.parser().ignore_tokens
    following = next((pieces[i] for i in range(index + 1, len(pieces)) if pieces[i].kind not in ignored), None)
    if following is not None and following.kind == "EQUAL":
        return Name.Variable if statement_head else Name.Attribute
    return Name


class RrrLexer(Lexer):
    """Pygments lexer for the rrrdsl language (``.rrr`` scripts and REPL input)."""

    name = "rrrdsl"
    aliases = ["rrr", "rrrdsl"]
    filenames = ["*.rrr"]
    mimetypes = ["text/x-rrrdsl"]

    def get_tokens_unprocessed(self, text: str) -> Iterator[tuple[int, _TokenType, str]]:  # type: ignore[override]
        """``(offset, token type, text)`` for every piece of ``text``; never raises."""
        pieces = list(grammar.lexemes(text))
        ignored = grammar.parser().ignore_tokens
        depth, statement_head, previous = 0, True, ""
        for index, piece in enumerate(pieces):
            kind = piece.kind
            if kind == "NAME":
                yield piece.start, _name_type(pieces, index, statement_head, previous == "USING"), piece.text
            else:
                yield piece.start, token_type(kind), piece.text
            if kind in ignored:
                statement_head = statement_head or (depth == 0 and "\n" in piece.text)
                continue
            depth = max(depth + _DEPTH.get(kind, 0), 0)
            statement_head, previous = False, kind



def paint_terminal(line: str) -> str:
    """One line of ``.rrr`` text coloured with ANSI escapes (the width it shows is unchanged)."""
    return highlight(line, RrrLexer(stripnl=False), TerminalFormatter()).rstrip("\n")
