"""``rrr fmt``: the examples are formatted, a messy file is formatted idempotently with its
comments kept, and on generated programs formatting keeps the meaning and is idempotent."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_properties import SETTINGS, graphs

from rrrdsl import formatter
from rrrdsl.cli import main
from rrrdsl.errors import RrrdslError
from rrrdsl.formatter import FormatError, format_text
from rrrdsl.lang import grammar
from rrrdsl.lang.parse import parse

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(str(p) for p in (ROOT / "examples").glob("*.rrr"))

MESSY = """

# a messy program   
w=0.5
a   =oracle( "ring" )   # the ring
p = a**w*( gmm( means = [[0.5,0] ,[ -0.5 , 0]], std=.1 )  # two blobs
        + box(low=[-1, 0],high=[ 1 ,1])
 )



sample p using mala( steps = 3 ) n = 10 seed=0->"x.npz"
\tshow -1 - -2
q = crop(a, rows = 0 : 1,cols=0:2)*a/a**-0.5
plot q   ->   "q.png"
r = (
  a # first

  # a comment line inside
  * a
)
"""

FORMATTED = """\
# a messy program
w = 0.5
a = oracle("ring")  # the ring
p = a ** w * (gmm(means=[[0.5, 0], [-0.5, 0]], std=.1)  # two blobs
    + box(low=[-1, 0], high=[1, 1])
)

sample p using mala(steps=3) n=10 seed=0 -> "x.npz"
show -1 - -2
q = crop(a, rows=0:1, cols=0:2) * a / a ** -0.5
plot q -> "q.png"
r = (
    a  # first

    # a comment line inside
    * a
)
"""


def _comments(text: str) -> list[str]:
    return [value.rstrip() for kind, value, _ in grammar.lexemes(text) if kind == "COMMENT"]


def _meaning(text: str) -> tuple:
    return formatter._meaning(parse(text))


def test_the_examples_are_formatted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fmt", "--check", *EXAMPLES]) == 0
    assert capsys.readouterr().out == ""


def test_a_messy_file_is_formatted_idempotently_with_its_comments_and_meaning() -> None:
    assert format_text(MESSY) == FORMATTED
    assert format_text(FORMATTED) == FORMATTED
    assert _comments(FORMATTED) == _comments(MESSY)
    assert _meaning(FORMATTED) == _meaning(MESSY)


def test_check_prints_a_diff_and_changes_nothing_then_fmt_rewrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "messy.rrr"
    path.write_text(MESSY, encoding="utf-8")
    path.chmod(0o600)
    assert main(["fmt", "--check", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out.startswith(f"--- {path}\n+++ {path} (formatted)\n@@")
    assert "+a = oracle(\"ring\")  # the ring\n" in out.out and "would reformat" in out.err
    assert path.read_text(encoding="utf-8") == MESSY
    assert main(["fmt", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == FORMATTED
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # permissions kept
    assert [p.name for p in tmp_path.iterdir()] == ["messy.rrr"]  # no temporary file left
    mtime = path.stat().st_mtime_ns
    assert main(["fmt", "--check", str(path)]) == 0 and main(["fmt", str(path)]) == 0
    assert path.stat().st_mtime_ns == mtime  # a formatted file is not rewritten


def test_a_link_is_followed_and_line_ends_and_bom_are_changes(tmp_path: Path) -> None:
    target = tmp_path / "real.rrr"
    target.write_bytes(b'\xef\xbb\xbfp = oracle("ring")\r\nshow p\r\n')
    link = tmp_path / "link.rrr"
    link.symlink_to(target)
    assert main(["fmt", "--check", str(link)]) == 1
    assert main(["fmt", str(link)]) == 0
    assert link.is_symlink() and target.read_bytes() == b'p = oracle("ring")\nshow p\n'


def test_a_file_with_errors_is_left_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad, good = tmp_path / "bad.rrr", tmp_path / "good.rrr"
    bad.write_text("p = oracle( \"ring\")\nq = (p *\n", encoding="utf-8")
    good.write_text("p=oracle(\"ring\")\n", encoding="utf-8")
    assert main(["fmt", str(bad), str(good)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:9: unexpected end of the file" in err and "    q = (p *\n" in err
    assert bad.read_text(encoding="utf-8") == "p = oracle( \"ring\")\nq = (p *\n"
    assert good.read_text(encoding="utf-8") == "p = oracle(\"ring\")\n"
    assert main(["fmt", str(tmp_path / "missing.rrr")]) == 2


def test_a_layout_that_changed_the_meaning_would_not_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net: a broken layout (one that drops parentheses) is caught, nothing is written."""
    layout = formatter._layout
    monkeypatch.setattr(formatter, "_layout", lambda text: layout(text).replace("(a + b)", "a + b"))
    text = 'a = oracle("ring")\nb = oracle("bar")\np = a * (a + b)\n'
    path = tmp_path / "p.rrr"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FormatError, match="would change what this program means"):
        format_text(text)
    assert main(["fmt", str(path)]) == 1 and path.read_text(encoding="utf-8") == text


# --- generated programs -------------------------------------------------------------------

#: statements about the generated graph g0, covering every kind of statement
EXTRA = [
    "show g0",
    'sample g0 using mala(steps=3, mh="exact", grid=[1, -2.5e3], on=true) n=10 seed=0 -> "x.npz"',
    'plot g0 -> "p.png"',
    "w = -0.5 * 2",
    "h = (g0 ** -0.5) / g0 * (g0 + g0)",
    "show -1 - -2",
]
_WORDS = {"NAME", "NUMBER", "STRING", *grammar.keywords()}
comments = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Zl", "Zp"]), max_size=8).map(lambda t: "#" + t)


@st.composite
def programs(draw: st.DrawFn) -> tuple[str, str]:
    """A valid program in canonical layout (graphs printed by the canonical printer) and the
    same program messed up: other spaces, line breaks and comments inside brackets, blank and
    comment lines between statements, indented statements."""
    lines = [f"g{i} = {g}" for i, g in enumerate(draw(st.lists(graphs(full=True), min_size=1, max_size=3)))]
    lines += draw(st.lists(st.sampled_from(EXTRA), max_size=3))
    clean = "".join(line + "\n" for line in lines)
    messy = []
    for line in lines:
        messy.append(draw(st.sampled_from(["", " ", "\t"])))
        tokens = [piece for piece in grammar.lexemes(line) if piece.kind not in grammar.parser().ignore_tokens]
        depth = 0
        for before, after in zip(tokens, tokens[1:]):
            messy.append(before.text)
            depth += before.kind in ("LPAR", "LSQB")
            depth -= before.kind in ("RPAR", "RSQB")
            gaps = [" ", "  ", "\t"] + ([""] if not {before.kind, after.kind} <= _WORDS else [])
            if depth:
                gaps += ["\n", "\n\n   ", "  " + draw(comments) + "\n  "]
            messy.append(draw(st.sampled_from(gaps)))
        messy.append(tokens[-1].text)
        messy.append(draw(st.sampled_from(["\n", " \n\n\n", "  " + draw(comments) + "\n", "\n" + draw(comments) + "\n\n"])))
    return clean, "".join(messy)


@settings(SETTINGS, max_examples=100)  # each example formats and parses five programs
@given(programs())
def test_formatting_keeps_the_meaning_and_the_comments_and_is_idempotent(program: tuple[str, str]) -> None:
    clean, messy = program
    try:
        meaning = _meaning(clean)
    except RrrdslError:
        assume(False)  # a combination that the language rejects (say, crops that do not fit)
    assert _meaning(messy) == meaning
    formatted = format_text(messy)
    assert _meaning(formatted) == meaning
    assert format_text(formatted) == formatted
    assert _comments(formatted) == _comments(messy)
    assert format_text(clean) == clean  # the canonical printer's text is already formatted
