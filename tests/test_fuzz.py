"""Fuzzing the checks and the REPL (issue 19): generated programs shaped by the grammar, with
extreme numbers (1e308, 1e-320, literals that overflow, integers of hundreds of digits), deep
alternations of mixtures and powers, wrongly typed arguments of every built-in, and mutated
tokens, go through ``check_file`` (everything ``rrr check`` and ``rrr run`` do before work) and
through a REPL session over stdin. The only exception allowed is a placed ``RrrdslError``, and
the REPL keeps its bindings after any error.
"""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rrrdsl.errors import RrrdslError
from rrrdsl.repl import Session
from rrrdsl.run import RunOptions, check_file

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

EXTREME = ["0", "1", "2", "0.5", ".5", "3", "1e308", "1e-308", "1e-320", "1e999", "1e300", "18446744073709551616", "9" * 400]
numbers = st.one_of(
    st.sampled_from(EXTREME),
    st.integers(0, 2**200).map(str),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(repr),
)
signed = st.one_of(numbers, numbers.map(lambda n: f"-{n}"))
values = st.one_of(signed, st.sampled_from(['"x"', "true", "false", "[]", "[[0]]"]), st.lists(signed, min_size=1, max_size=3).map(lambda v: f"[{', '.join(v)}]"))


@st.composite
def leaves(draw: st.DrawFn) -> str:
    """A call of a built-in: good arguments, extreme numbers, or a keyword of the wrong type."""
    a, b, c = draw(signed), draw(signed), draw(values)
    return draw(
        st.sampled_from(
            [
                'oracle("ring")',
                'oracle("bar")',
                'oracle("gauss")',
                f"gmm(means=[[{a}, {b}]], std={draw(numbers)})",
                f"gmm(means=[[{a}], [{b}]], std=1, weights=[{draw(numbers)}, {draw(numbers)}])",
                f"box(low=[{a}, 0], high=[1, {b}])",
                f'model("ring", schedule={c})',
                f'model("ring", param={c})',
                f"oracle({c})",
                f"gmm(means={c}, std={c})",
                f"box(low={c}, high={c})",
                f'classifier("digits", label={c})',
                f'crop(oracle("ring"), dims={a}:{b})',
                f"crop({c}, rows={a}:{b})",
            ]
        )
    )


def combine(parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(parts, st.sampled_from(["+", "-", "*", "/"]), parts).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(parts, signed).map(lambda t: f"({t[0]}) ** {t[1]}"),
        st.tuples(numbers, parts).map(lambda t: f"{t[0]} * {t[1]}"),
        st.tuples(parts, signed, signed).map(lambda t: f"crop({t[0]}, dims={t[1]}:{t[2]})"),
    )


expressions = st.recursive(leaves(), combine, max_leaves=8)


@st.composite
def deep(draw: st.DrawFn) -> str:
    """An alternation of mixtures and powers, up to 300 deep."""
    text = draw(leaves())
    for i in range(draw(st.integers(1, 300))):
        text = f"({text} + oracle(\"bar\")) ** {draw(numbers)}" if i % 2 == 0 else f"({text} * oracle(\"gauss\") + oracle(\"ring\"))"
    return text


SAMPLERS = ["reverse", "ddim", "ula", "mala", "hmc", "nuts", "smc", "nust"]
OPTIONS = ["steps", "leapfrog", "max_tree_depth", "step_size", "mcmc_levels", "device", "adapt", "eta", "threshold", "snapshots"]


@st.composite
def statements(draw: st.DrawFn) -> str:
    expr = draw(st.one_of(expressions, deep()))
    kind = draw(st.sampled_from(["assign", "show", "sample", "plot"]))
    if kind == "assign":
        return f"p = {expr}"
    if kind == "show":
        return f"show {expr}"
    if kind == "plot":
        return f'plot {expr} -> "{draw(st.sampled_from(["p.png", "../p.png", "p.npz"]))}"'
    option = f"{draw(st.sampled_from(OPTIONS))}={draw(values)}"
    return f"sample {expr} using {draw(st.sampled_from(SAMPLERS))}({option}) n={draw(numbers)} seed={draw(numbers)}"


TOKENS = ["(", ")", "[", "]", "**", "*", "+", "-", "/", "=", ",", ":", '"', "->", "1e308", "9" * 40, "oracle", "sample", "\n", "using"]


@st.composite
def programs(draw: st.DrawFn) -> str:
    """Up to four statements, then (sometimes) a few tokens deleted, repeated or inserted."""
    text = "\n".join(draw(st.lists(statements(), min_size=1, max_size=4)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["delete", "repeat", "insert"]))
        if edit == "delete":
            text = text[:at] + text[at + 1 :]
        elif edit == "repeat":
            text = text[:at] + text[at : at + 3] + text[at:]
        else:
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
    return text + "\n"


@SETTINGS
@given(program=programs())
def test_check_file_raises_only_placed_errors(tmp_path_factory, program: str) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    script = folder / "s.rrr"
    script.write_text(program, encoding="utf-8")
    checked = check_file(script, RunOptions(folder / "out", quiet=True))
    for error in checked.errors:
        assert isinstance(error, RrrdslError) and error.line is not None and error.column is not None, repr(error)
    assert not (folder / "out").exists() or not any((folder / "out").iterdir())  # checks write nothing


@SETTINGS
@given(program=programs())
def test_the_repl_survives_any_input_with_its_bindings(tmp_path_factory, program: str) -> None:
    """Each line as one input of a session, without sampling (``sample``/``plot`` lines are
    shown instead): no exception leaves the session, and a name bound before is still bound."""
    stdout, stderr = io.StringIO(), io.StringIO()
    session = Session(Path(tmp_path_factory.mktemp("repl")), io.StringIO(), stdout, stderr)
    assert session.handle('kept = oracle("ring")')
    for line in program.splitlines():
        assert session.handle(line.replace("sample ", "show ", 1).replace("plot ", "show ", 1))
    assert session.handle("show kept")
    assert stdout.getvalue().rstrip().endswith('kept = oracle("ring")'), stderr.getvalue()[-300:]
