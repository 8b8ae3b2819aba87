"""``rrr repl`` driven through piped stdin, and the session's commands in-process."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rrrdsl.repl import Session, incomplete

ROOT = Path(__file__).resolve().parents[1]


def test_piped_session_define_show_error_sample_quit(tmp_path: Path) -> None:
    session = "\n".join(
        [
            'p = oracle("ring") * oracle("bar")',
            "show p",
            "p ** 2 / rnig",  # an error: the session goes on
            "q = (p *",  # multi-line while a parenthesis is open
            '     oracle("gauss"))',
            "q",  # an expression alone: its canonical graph
            "sample p using mala(steps=2, mcmc_levels=[0, 1]) n=20 seed=0",
            ':plot -> "last.png"',
            ":quit",
            "show p",  # never reached
        ]
    )
    result = subprocess.run(
        [sys.executable, "-m", "rrrdsl.cli", "repl", "--out", str(tmp_path)],
        input=session + "\n", capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == 'p = oracle("ring") * oracle("bar")'
    assert out[1] == 'q = oracle("ring") * oracle("bar") * oracle("gauss")'
    assert out[2].startswith("sample p (line 1): mala, N=20, NFE/particle")
    assert len(out) == 3  # no prompts with piped input, and nothing after :quit
    assert result.stderr.splitlines()[:3] == ["<repl>:1:10: unknown name 'rnig'", "    p ** 2 / rnig", "             ^"]
    assert (tmp_path / "last.png").exists()


def run(lines: str, tmp_path: Path) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    Session(tmp_path, io.StringIO(lines), stdout, stderr).loop()
    return stdout.getvalue(), stderr.getvalue()


def test_commands_show_dot_load_models_and_errors(tmp_path: Path) -> None:
    script = tmp_path / "a.rrr"
    script.write_text('a = oracle("ring_left")\n')
    out, err = run(
        f':load {script}\n:show a ** 2\n:dot a\n:models\n:sample a using mlaa n=5\n:nope\n:show a +\nshow a\n', tmp_path
    )
    assert 'oracle("ring_left") ** 2' in out
    assert 'digraph "a"' in out and 'label="oracle(\\"ring_left\\")"' in out
    assert 'oracle("bar")' in out  # :models lists the oracles
    assert "<repl>:1:2: unknown sampler 'mlaa'\n    :sample a using mlaa n=5\n     ^" in err
    assert "unknown command ':nope'" in err and "did you mean ':" not in err
    assert "<repl>:1:" in err and ":show a +" in err  # the syntax error shows what was typed
    assert out.rstrip().endswith('a = oracle("ring_left")')  # the binding survived the errors


def test_plot_without_samples_is_an_error_and_incomplete_input() -> None:
    out, err = run(":plot\n", Path("."))
    assert "nothing to plot yet" in err
    assert incomplete('p = (oracle("a") *') and incomplete("x = [1,")
    assert not incomplete('p = oracle("a")') and not incomplete('p = (oracle("a")\n * oracle("b"))')


def test_expressions_are_parsed_with_the_expression_start_symbol(tmp_path: Path) -> None:
    out, err = run('a = oracle("a")\na * )\n:show a *  rnig\n:dot a +\n(a *\n   oracle("b"))\n', tmp_path)
    lines = err.splitlines()
    assert lines[0] == "<repl>:1:5: unmatched `)`: no bracket is open" and lines[1:3] == ["    a * )", "        ^"]
    assert lines[4:7] == ["<repl>:1:12: unknown name 'rnig'", "    :show a *  rnig", "               ^"]
    assert lines[8:11] == ["<repl>:1:9: unexpected end of the expression", "    :dot a +", "            ^"]
    assert out.splitlines()[-1] == 'oracle("a") * oracle("b")'  # continued across lines


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_at_a_terminal_the_source_line_of_an_error_is_coloured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pygments")
    plain = run("p ** 2 / rnig\n", tmp_path)[1]
    monkeypatch.delenv("NO_COLOR", raising=False)
    stderr = _Terminal()
    Session(tmp_path, io.StringIO("p ** 2 / rnig\n"), io.StringIO(), stderr).loop()
    coloured = stderr.getvalue()
    assert "\x1b[" in coloured.splitlines()[1] and "\x1b[" not in coloured.replace(coloured.splitlines()[1], "")
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain  # only colour: the caret stays under the column
    monkeypatch.setenv("NO_COLOR", "1")
    stderr = _Terminal()
    Session(tmp_path, io.StringIO("p ** 2 / rnig\n"), io.StringIO(), stderr).loop()
    assert stderr.getvalue() == plain


def test_at_a_terminal_the_echo_of_show_is_coloured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pygments")
    lines = 'p = oracle("ring") ** 2\nshow p\n:show p * 0.5\n'
    plain = run(lines, tmp_path)[0]
    assert plain == 'p = oracle("ring") ** 2\n0.5 * oracle("ring") ** 2\n'
    monkeypatch.delenv("NO_COLOR", raising=False)
    stdout = _Terminal()
    Session(tmp_path, io.StringIO(lines), stdout, io.StringIO()).loop()
    assert all("\x1b[" in line for line in stdout.getvalue().splitlines())
    assert re.sub(r"\x1b\[[0-9;]*m", "", stdout.getvalue()) == plain


def test_load_refuses_an_endless_file_and_outputs_stay_inside(tmp_path: Path) -> None:
    """`:load /dev/zero` ends with an error; a path out of --out is refused; the session goes on."""
    stdout, stderr = io.StringIO(), io.StringIO()
    lines = ':load /dev/zero\np = oracle("ring")\nsample p using reverse n=4 -> "../escape.npz"\n'
    lines += 'sample p using reverse n=4 -> "in.npz"\nsample p using reverse n=4 -> "in.npz"\n'
    Session(tmp_path / "out", io.StringIO(lines), stdout, stderr).loop()
    err = stderr.getvalue()
    assert "/dev/zero is larger than 1,000,000 bytes" in err
    assert '<repl>:1:31: the output "../escape.npz" leaves the output folder' in err
    assert not (tmp_path / "escape.npz").exists() and "already exists" not in err  # its own file may be rewritten
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["in.json", "in.npz"]
