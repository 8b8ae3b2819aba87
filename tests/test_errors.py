"""Bad programs: each maps to its error class, line, column and a fragment of the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrrdsl.errors import InvalidValueError, RrrdslError, RrrdslSyntaxError, UnknownNameError
from rrrdsl.lang.ir import oracle
from rrrdsl.lang.grammar import parser as _parser
from rrrdsl.lang.parse import WORDS, check, expected_words, parse, parse_expr, read_source

Syntax, Unknown, Invalid = RrrdslSyntaxError, UnknownNameError, InvalidValueError
A = 'a = oracle("a")\n'  # a first line binding `a`, so errors below are on line 2

# (program, error class, line, column, fragment of the message or hint)
BAD = [
    # syntax: what was expected, in words
    ('p = oracle("a") *', Syntax, 1, 18, "expected an expression, such as a number, a name"),
    ('p = (oracle("a")', Syntax, 1, 17, "`)` to close the `(` opened at 1:5"),
    ('p = oracle("a"', Syntax, 1, 15, "`)` to close the `(` opened at 1:11 or `,`"),
    ('p = oracle("a"\nq = oracle("b")\n', Syntax, 2, 1, "`)` to close the `(` opened at 1:11"),
    ('p = oracle("a") oracle("b")', Syntax, 1, 17, "an operator"),
    ("x = 1 2", Syntax, 1, 7, "a newline after the statement"),
    ('p = oracle("a"))', Syntax, 1, 16, "unmatched `)`"),
    ("p = [1, 2]", Syntax, 1, 5, "unexpected `[`"),
    ("p = gmm(means=[[0, 0]]", Syntax, 1, 23, "close the `(` opened at 1:8"),
    ("p = gmm(means=[[0, 0]", Syntax, 1, 22, "`]` to close the `[` opened at 1:15"),
    ("p = gmm(means=)", Syntax, 1, 15, "a value: a number, a string"),
    ('p = oracle("a) ', Syntax, 1, 12, "unterminated string"),
    ('p = oracle("\\q")', Syntax, 1, 12, "invalid string"),
    ('p = oracle("a") @ 2', Syntax, 1, 17, "unexpected character '@'"),
    ("sample = 3", Syntax, 1, 1, "cannot assign to `sample`"),
    ("model = 3", Syntax, 1, 1, "cannot assign to `model`"),
    ("true = 3", Syntax, 1, 1, "`true` is a keyword, not a name"),
    ("show", Syntax, 1, 5, "expected an expression"),
    (A + "a(3)", Syntax, 2, 2, "expected `=`"),
    ("= 3", Syntax, 1, 1, "a statement: `name = ...`"),
    ('p = crop(rows=0:1, oracle("a"))', Syntax, 1, 5, "positional argument follows a keyword"),
    (A + "sample a n=3 using mala", Syntax, 2, 14, "unexpected keyword `using`"),
    (A + "p = sample * a", Syntax, 2, 5, "`sample` is a keyword, not a name"),
    ('x = oracle("a").name', Syntax, 1, 16, "unexpected character '.'"),
    # unknown names, with suggestions
    ('p = modle("a")', Unknown, 1, 5, "did you mean 'model'"),
    ('p = q * oracle("a")', Unknown, 1, 5, "unknown name 'q'"),
    ('ring = oracle("ring")\np = rnig * ring', Unknown, 2, 5, "did you mean 'ring'"),
    ("p = gmm(mean=[[0, 0]])", Unknown, 1, 9, "did you mean 'means'"),
    ('p = oracle("a", label=3)', Unknown, 1, 17, "unknown keyword 'label' for oracle"),
    (A + "sample a sed=1", Unknown, 2, 10, "did you mean 'seed'"),
    ("p = model", Unknown, 1, 5, "is a function"),
    (A + "p = a(3)", Unknown, 2, 5, "'a' is not a function"),
    ('x = __import__("os")', Unknown, 1, 5, "unknown function"),
    # invalid values, from the IR or the lowering, at the offending place
    ('p = oracle("a", "b")', Invalid, 1, 5, "at most 1 positional"),
    ("p = gmm(means=[[0, 0]], means=[[1, 1]])", Invalid, 1, 25, "means= twice"),
    ("p = gmm(std=0.1)", Invalid, 1, 5, "needs means"),
    ("p = gmm(means=[[0, 0], [1]])", Invalid, 1, 5, "ragged"),
    ("p = gmm(means=[[0, 0]], std=0)", Invalid, 1, 5, "std must be positive"),
    ("p = box(low=[1, 0], high=[0, 1])", Invalid, 1, 5, "low < high"),
    ('p = crop(oracle("a"), rows=4:2)', Invalid, 1, 5, "reversed"),
    ('p = crop(oracle("a"), cols=2:2)', Invalid, 1, 5, "empty"),
    ('p = crop(oracle("a"))', Invalid, 1, 5, "needs rows=, cols= or dims="),
    ('p = crop(oracle("a"), rows=0.5:2)', Invalid, 1, 5, "integers"),
    ('p = model("a", label=0:3)', Invalid, 1, 16, "only valid in crop"),
    ("p = oracle(3)", Invalid, 1, 5, "needs a name string"),
    ('p = oracle("a") ** oracle("b")', Invalid, 1, 17, "exponent must be a number"),
    ('p = 2 ** oracle("a")', Invalid, 1, 7, "cannot be an exponent"),
    ('p = -oracle("a")', Invalid, 1, 5, "unary minus"),
    ('p = oracle("a") - oracle("b")', Invalid, 1, 17, "cannot be subtracted"),
    ('p = oracle("a") + oracle("b") - oracle("c")', Invalid, 1, 31, "cannot be subtracted"),
    ('p = oracle("a") / 0', Invalid, 1, 17, "division by zero"),
    ("x = 1 / 0", Invalid, 1, 7, "division by zero"),
    ("x = 1e308 * 10", Invalid, 1, 11, "not finite"),
    ("x = 2 ** 2000", Invalid, 1, 7, "not finite"),
    ("x = 1e999", Invalid, 1, 5, "too large"),
    ('p = oracle("a") ** 1e999', Invalid, 1, 20, "too large"),
    ("x = (-8) ** (1/3)", Invalid, 1, 10, "no real value"),
    ('p = oracle("a") ** (0 ** -1)', Invalid, 1, 23, "no real value"),
    ('p = 0 * oracle("a")', Invalid, 1, 5, "must be positive"),
    ('p = oracle("a") + 1', Invalid, 1, 5, "constant cannot be a mixture component"),
    (A + "sample a n=0", Invalid, 2, 10, "n= must be a positive integer"),
    (A + "sample a n=1.5", Invalid, 2, 10, "n= must be a positive integer"),
    (A + "sample a seed=-1", Invalid, 2, 10, "seed= must be a non-negative integer"),
    (A + "sample a n=1 n=2", Invalid, 2, 14, "given twice"),
    (A + "sample a using mala(k=1, k=2)", Invalid, 2, 26, "given twice"),
    (A + "sample a using mala(k=0:1)", Invalid, 2, 21, "only valid in crop"),
    ("sample 0.5", Invalid, 1, 8, "sample needs a density, got the number 0.5"),
    (A + 'plot a -> ""', Invalid, 2, 11, "output path is empty"),
]


@pytest.mark.parametrize("text, kind, line, column, fragment", BAD)
def test_bad_program(text: str, kind: type, line: int, column: int, fragment: str) -> None:
    with pytest.raises(RrrdslError) as info:
        parse(text, "bad.rrr")
    error = info.value
    assert type(error) is kind, error
    assert (error.line, error.column) == (line, column), error
    assert fragment in error.message + "\n" + (error.hint or ""), error
    assert check(text, "bad.rrr")[0].format() == error.format()


def test_at_least_thirty_bad_programs() -> None:
    assert len(BAD) >= 30 and {kind for _, kind, *_ in BAD} == {Syntax, Unknown, Invalid}


def test_formatted_message_shows_file_line_caret_and_hint() -> None:
    with pytest.raises(UnknownNameError) as info:
        parse('ring = oracle("ring")\np = oracle("bar") * rnig\n', "demo.rrr")
    lines = str(info.value).split("\n")
    assert lines[0] == "demo.rrr:2:21: unknown name 'rnig'"
    assert lines[1] == '    p = oracle("bar") * rnig'
    assert lines[2] == "    " + " " * 20 + "^"
    assert lines[3] == "    did you mean 'ring'?"
    with pytest.raises(RrrdslSyntaxError) as info:
        parse_expr("oracle(\"a\") *")
    assert str(info.value).startswith("<string>:1:14: unexpected end of the expression\n    oracle(\"a\") *\n")


def test_syntax_hints_never_use_terminal_names() -> None:
    terminals = {t.name for t in _parser().terminals}
    for name in terminals | {"$END"}:
        words = expected_words({name}, [])
        assert not any(t in words for t in terminals | {"$END"}), (name, words)
    assert set(WORDS) >= terminals - {"COMMENT"} - {t for t in terminals if t.startswith("__")}


def test_check_reports_every_error_once_in_order() -> None:
    text = "\n".join(
        [
            'a = oracle("a")',
            'p = modle("x")',  # unknown function
            "q = p * a",  # uses p, whose statement failed: not reported again
            "r = (a *",  # unclosed: the next line is a new statement
            "s = a $ b",
            "t = r * s * a",  # r and s failed: nothing more
            "u = a - a",
            'v = gmm(means=[[0, 0] [1, 1]],',  # error inside a multi-line call ...
            "        std=0.1)",  # ... its continuation is skipped with it
            "show u * v * a",
            "show a",
        ]
    )
    errors = check(text, "many.rrr")
    assert [(e.line, e.column) for e in errors] == [(2, 5), (5, 3), (5, 7), (7, 7), (8, 23)]
    assert all(e.filename == "many.rrr" and e.source_line is not None for e in errors)
    assert check('a = oracle("a")\nshow a\n') == []


def test_deep_nesting_works_or_fails_cleanly() -> None:
    depth = 1000
    assert parse_expr("(" * depth + 'oracle("a")' + ")" * depth) == oracle("a")
    nested_products = "(" * depth + 'oracle("a")' + "".join(f' * oracle("b{i}"))' for i in range(depth))
    assert len(parse_expr(nested_products).terms) == depth + 1
    assert parse_expr("-" * depth + "1") == parse_expr("1")
    with pytest.raises(RrrdslError):
        parse_expr('oracle("a")' + " ** 2" * depth)  # folds to 2 ** 2 ** ... : not finite
    with pytest.raises(RrrdslError):
        parse_expr("(" * 5 * depth)
    try:  # a 1,000-deep view: the IR's recursive hashing may give up
        view = parse_expr("crop(" * depth + 'oracle("a")' + ", dims=0:1)" * depth)
    except RrrdslError as error:
        assert "nested too deeply" in error.message
    else:
        assert view is not None


def test_no_python_is_ever_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    attacks = [
        f'x = __import__("os").system("touch {marker}")',
        f'x = eval("open(\'{marker}\', \'w\')")',
        'x = oracle("a").__class__',
        "x = globals",
        f'show model("{marker}")',  # a string is only ever a name
    ]
    for text in attacks:
        try:
            parse(text)
        except RrrdslError:
            pass
    assert not marker.exists()


def test_read_source(tmp_path: Path) -> None:
    good = tmp_path / "good.rrr"
    good.write_bytes('\ufeffshow oracle("a")\n'.encode("utf-8"))
    assert read_source(good) == 'show oracle("a")\n'
    bad = tmp_path / "bad.rrr"
    bad.write_bytes(b'show oracle("a")\nshow oracle("\xff")\n')
    with pytest.raises(RrrdslSyntaxError) as info:
        read_source(bad)
    assert (info.value.line, info.value.column) == (2, 14) and "not UTF-8" in info.value.message
