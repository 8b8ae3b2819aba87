"""The IPython extension, driven through an in-process IPython shell."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("IPython")
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from IPython.lib.pretty import pretty  # noqa: E402

import torch  # noqa: E402

from rrrdsl import notebook  # noqa: E402
from rrrdsl.lang.parse import parse_expr  # noqa: E402
from rrrdsl.samplers.result import SampleResult  # noqa: E402


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InteractiveShell:
    """The shell with an empty namespace, the extension loaded, and a fresh session writing to tmp_path."""
    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    shell.reset()
    shell.run_line_magic("load_ext", "rrrdsl")
    shell.register_magics(notebook.RrrMagics(shell, tmp_path))
    return shell


def test_load_ext_registers_the_cell_and_line_magics(shell: InteractiveShell) -> None:
    magics = shell.magics_manager.magics
    assert "rrr" in magics["cell"] and "rrr" in magics["line"]


def test_a_cell_shares_names_and_numbers_with_python(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_cell("w = 2")
    result = shell.run_cell('%%rrr\n# a comment first\np = oracle("ring") * oracle("bar") ** w\nshow p\nk = w / 4\n')
    assert result.success
    assert shell.user_ns["p"] == parse_expr('oracle("ring") * oracle("bar") ** 2')
    assert shell.user_ns["k"] == 0.5 and shell.user_ns["w"] == 2 and type(shell.user_ns["w"]) is int
    assert capsys.readouterr().out == 'p = oracle("ring") * oracle("bar") ** 2\n'
    assert shell.run_cell("from rrrdsl import oracle\nq = p / oracle('gauss')").success  # a graph built in Python
    assert shell.run_cell("%%rrr\nshow q ** 2\n").success
    assert capsys.readouterr().out == 'oracle("ring") ** 2 * oracle("bar") ** 4 / oracle("gauss") ** 2\n'


def test_the_line_magic_returns_the_graph_shown_as_its_canonical_text(shell: InteractiveShell) -> None:
    shell.run_cell('%rrr p = oracle("ring") * oracle("bar")')
    graph = shell.run_cell('%rrr p ** 2 / oracle("gauss")').result
    assert graph == parse_expr('oracle("ring") ** 2 * oracle("bar") ** 2 / oracle("gauss")')
    assert pretty(graph) == str(graph)
    assert shell.run_cell("%rrr 2 * 0.25").result == 0.5


def test_an_error_shows_a_caret_no_traceback_fails_the_cell_and_keeps_the_session(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shell.run_cell('%%rrr\np = oracle("ring")\n').success
    capsys.readouterr()
    result = shell.run_cell("%%rrr\nq = p * rnig\n")
    assert not result.success and isinstance(result.error_in_exec, notebook.CellError)
    captured = capsys.readouterr()
    assert "<repl>:1:9: unknown name 'rnig'\n    q = p * rnig\n            ^\n" in captured.err
    assert "Traceback" not in captured.out + captured.err and "q" not in shell.user_ns
    assert not shell.run_cell("%rrr p * (").success
    assert "<repl>:1:6: unexpected end of the expression\n    p * (\n         ^" in capsys.readouterr().err
    assert shell.run_cell("%%rrr\nshow p\n").success  # the session goes on


def test_samples_become_numpy_arrays_with_diagnostics_and_plots_are_shown_inline(
    shell: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[object] = []
    monkeypatch.setattr(notebook, "display", shown.append)
    cell = '%%rrr\np = oracle("ring") * oracle("bar")\nsample p using mala(steps=2, mcmc_levels=[0, 1]) n=20 seed=0\nplot p -> "p.png"\n'
    assert shell.run_cell(cell).success
    assert shell.user_ns["p_samples"].shape == (20, 2)
    diagnostics = shell.user_ns["p_diagnostics"]  # the two levels that ran MALA, as a table
    lines = repr(diagnostics).splitlines()
    assert lines[0].startswith("sample p (line 2): mala, N=20") and lines[1].split()[:2] == ["level", "acceptance"]
    assert [line.split()[0] for line in lines[2:]] == ["1", "0"] and len(lines[2].split()) == 7  # no ESS without SMC
    assert diagnostics._repr_html_().count("<tr><td>") == 2 and "<th>step size</th>" in diagnostics._repr_html_()
    assert [image.filename for image in shown] == [str(tmp_path / name) for name in ("p.png", "p-diagnostics.png", "p-annealing.png")]


def test_samples_show_as_pictures_and_diagnostics_as_a_table_through_the_display_formatter(shell: InteractiveShell) -> None:
    cell = '%%rrr\np = oracle("ring") * oracle("bar")\nsample p using mala(steps=2, mcmc_levels=[0, 1]) n=20 seed=0\n'
    assert shell.run_cell(cell).success
    result = shell.user_ns["p_result"]  # the whole result, also bound by the cell
    assert isinstance(result, SampleResult) and (result.x.numpy() == shell.user_ns["p_samples"]).all()
    data, _ = shell.display_formatter.format(result)
    assert data["image/png"].startswith(b"\x89PNG") and data["text/plain"].startswith("SampleResult(")
    data, _ = shell.display_formatter.format(shell.user_ns["p_diagnostics"])
    assert data["text/html"].startswith("<table><caption>sample p (line 2): mala, N=20")
    images = SampleResult(torch.rand(12, 64), {"sampler": "reverse", "nfe": 100.0})  # 8x8 images, drawn as a mosaic
    line = SampleResult(torch.randn(12, 1), {"sampler": "reverse", "nfe": 100.0})
    assert all(shell.display_formatter.format(r)[0]["image/png"].startswith(b"\x89PNG") for r in (images, line))
