"""The Pygments lexer: every example and every keyword of the grammar, no error tokens."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("pygments")
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename  # noqa: E402
from pygments.token import Error, Keyword, Name, Operator, String, Token  # noqa: E402

from rrrdsl.highlight import RrrLexer, token_type  # noqa: E402
from rrrdsl.lang import grammar  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.rrr"))


def _tokens(text: str) -> list[tuple[object, str]]:
    return [(kind, value) for _, kind, value in RrrLexer().get_tokens_unprocessed(text)]


def _grammar_words() -> list[str]:
    """The keywords as ``grammars/rrr.lark`` spells them (``SAMPLE: "sample"``), read from
    the file itself rather than through the parser the lexer is built from."""
    text = (ROOT / "grammars" / "rrr.lark").read_text(encoding="utf-8")
    return re.findall(r'^[A-Z_]+\s*:\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*$', text, flags=re.MULTILINE)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_lexes_without_error_tokens(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    tokens = _tokens(text)
    assert "".join(value for _, value in tokens) == text
    assert [value for kind, value in tokens if kind in Error] == []
    assert any(kind in Keyword for kind, _ in tokens) and any(kind in Name.Builtin for kind, _ in tokens)


def test_every_keyword_of_the_grammar_is_a_keyword() -> None:
    words = _grammar_words()
    assert {"sample", "using", "plot", "show", "true", "false"} <= set(words)
    for word in words:
        (kind, value), = _tokens(word)
        assert value == word and kind in Keyword, (word, kind)


def test_every_terminal_of_the_grammar_has_a_token_type() -> None:
    untyped = [t.name for t in grammar.parser().terminals if token_type(t.name) is Error]
    assert untyped == [], f"give these terminals a token type in rrrdsl.highlight.TOKEN_TYPES: {untyped}"


def test_names_are_refined_by_where_they_stand() -> None:
    tokens = [t for t in _tokens('p = crop(model("d", label=3), rows=0:8) ** -0.5\nsample p using mala(steps=3) n=10 -> "a.npz"\n') if t[0] not in Token.Text]
    assert tokens[:6] == [(Name.Variable, "p"), (Operator, "="), (Name.Builtin, "crop"), (Token.Punctuation, "("), (Name.Builtin, "model"), (Token.Punctuation, "(")]
    assert (Name.Attribute, "label") in tokens and (Name.Attribute, "rows") in tokens and (Name.Attribute, "n") in tokens
    assert (Name.Function, "mala") in tokens and (Name, "p") in tokens and (String.Double, '"a.npz"') in tokens


def test_what_no_terminal_matches_is_an_error_token_and_lexing_goes_on() -> None:
    tokens = _tokens('p = a @ b\nq = "open\nshow q\n')
    assert [value for kind, value in tokens if kind in Error] == ["@", '"open']
    assert (Keyword, "show") in tokens


def test_pygments_finds_the_lexer_by_name_and_file_name() -> None:
    for alias in ("rrr", "rrrdsl"):
        assert isinstance(get_lexer_by_name(alias), RrrLexer)
    assert isinstance(get_lexer_for_filename("ring_bar.rrr"), RrrLexer)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=80))
def test_any_text_lexes_back_to_itself(text: str) -> None:
    assert "".join(value for _, value in _tokens(text)) == text
