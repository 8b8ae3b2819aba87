"""The IPython extension: ``%load_ext rrrdsl``, then ``%%rrr`` cells and ``%rrr`` lines.

A ``%%rrr`` cell is a ``.rrr`` program run in one :class:`~rrrdsl.repl.Session` per shell,
shared with the notebook's Python namespace both ways: a Python name bound to a graph or a
real number can be used in the cell, every name the cell binds is a Python variable
afterwards, and a ``sample`` of a named target ``p`` leaves its samples as the numpy array
``p_samples`` (``[N, D]``), its per-level diagnostics as ``p_diagnostics`` (a table) and the
whole :class:`~rrrdsl.samplers.result.SampleResult` as ``p_result`` (``diagnostics["log_z"]``
for SMC). A ``SampleResult``, also one that ``rrrdsl.sample`` returns in Python, shows as a
small picture of its samples (:func:`rrrdsl.plot.result_figure`). Long sampling shows a
progress bar (tqdm's notebook widget in Jupyter: :func:`rrrdsl.samplers.api.progress_bar`).
Plots are written as by ``rrr run`` and shown inline; ``$RRR_N_SCALE`` multiplies every ``n``
as it does for ``rrr run`` (the tests run ``examples/tour.ipynb`` small with it).
An error is printed with its caret, without a traceback, the cell is marked failed
(:class:`CellError`) and the session keeps its bindings. ``%rrr EXPR`` returns the graph (or
number) of an expression, which IPython shows as its canonical text (and Jupyter draws when
Graphviz is installed: ``Expr._repr_svg_``); ``%rrr STATEMENT`` runs one statement as a cell
would.
"""

from __future__ import annotations

import html
import io
import math
import numbers
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import Image, display

from . import plot
from .errors import RrrdslError
from .lang.grammar import statement_head
from .lang.ir import Expr
from .lang.parse import parse_show
from .lang.program import Binding
from .repl import FILENAME, Session
from .run import SampleRecord, n_scale_default, summary_line
from .samplers.result import SampleResult

__all__ = ["CellError", "Diagnostics", "RrrMagics", "bindable", "load", "sample_png"]


class _Current(io.TextIOBase):
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is now (a kernel or a test swaps them)."""

    def __init__(self, name: str) -> None:
        self.stream = name

    def write(self, text: str) -> int:
        return getattr(sys, self.stream).write(text)

    def flush(self) -> None:
        getattr(sys, self.stream).flush()


class CellError(RrrdslError):
    """A cell or line whose errors were printed above: marks it failed (so "run all" stops
    there) and, unlike other exceptions, shows no traceback."""

    def __init__(self) -> None:
        super().__init__("the cell stopped at the error above")

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines instead of a traceback
        return []


class Diagnostics:
    """A sample's per-level diagnostics (``p_diagnostics``): a table of the levels that ran
    MCMC or SMC, from level T-1 down to 0; Jupyter shows it in HTML, a terminal as text."""

    COLUMNS = ("level", "acceptance", "min", "max", "step size", "divergences", "NFE", "ESS / N")

    def __init__(self, record: SampleRecord) -> None:
        self.record = record

    def rows(self) -> list[tuple[str, ...]]:
        """One row of formatted numbers per level with kernel steps or SMC weights."""
        levels = self.record.result.diagnostics["levels"]
        rows = []
        for t in range(len(levels.nfe) - 1, -1, -1):
            accept, ess = float(levels.accept_mean[t]), float(levels.ess[t])
            if math.isnan(accept) and math.isnan(ess):
                continue
            numbers = (accept, float(levels.accept_min[t]), float(levels.accept_max[t]), float(levels.step_size[t]))
            rows.append(
                (
                    str(t),
                    *(f"{v:.3g}" if math.isfinite(v) else "" for v in numbers),
                    f"{float(levels.divergences[t]):.0f}",
                    f"{float(levels.nfe[t]):.0f}",
                    f"{ess / self.record.n:.2f}" if math.isfinite(ess) else "",
                )
            )
        return rows

    def __repr__(self) -> str:
        table = [self.COLUMNS, *self.rows()]
        widths = [max(len(row[i]) for row in table) for i in range(len(self.COLUMNS))]
        lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in table]
        return "\n".join([summary_line(self.record), *lines])

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in self.rows())
        caption = html.escape(summary_line(self.record))
        return f"<table><caption>{caption}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def bindable(namespace: Mapping[str, Any]) -> dict[str, Binding]:
    """The names of a Python namespace that ``.rrr`` text can use: graphs and real numbers
    (booleans and names starting with ``_`` left out)."""
    found: dict[str, Binding] = {}
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, bool):
            continue
        if isinstance(value, Expr):
            found[name] = value
        elif isinstance(value, numbers.Real):
            found[name] = float(value)
    return found


@magics_class
class RrrMagics(Magics):
    """``%%rrr`` and ``%rrr``, over one session per shell (plots and samples written to ``out``)."""

    def __init__(self, shell: Any, out: Path = Path(".")) -> None:
        super().__init__(shell)
        self.session = Session(out, io.StringIO(), _Current("stdout"), _Current("stderr"), progress=True, n_scale=n_scale_default())

    def _run(self, text: str) -> None:
        """Run ``text`` with the namespace's graphs and numbers bound; publish what it binds
        (also the statements that ran before an error), then show its plots."""
        namespace = self.shell.user_ns
        runner = self.session.runner
        before = self.session.bindings = bindable(namespace)
        samples, plots = len(runner.records), len(runner.plots)
        ran = self.session.run(text)
        namespace.update({k: v for k, v in self.session.bindings.items() if before.get(k) is not v})
        for record in runner.records[samples:]:
            if record.label.isidentifier():
                namespace[f"{record.label}_samples"] = record.result.x.detach().cpu().numpy()
                namespace[f"{record.label}_diagnostics"] = Diagnostics(record)
                namespace[f"{record.label}_result"] = record.result
        for path in runner.plots[plots:]:
            display(Image(filename=str(path)))
        if not ran:
            raise CellError()

    @cell_magic
    def rrr(self, line: str, cell: str) -> None:
        """Run the cell as a ``.rrr`` program in the notebook's session."""
        self._run(cell)

    @line_magic("rrr")
    def rrr_line(self, line: str) -> Optional[Binding]:
        """``%rrr EXPR``: the graph of ``EXPR``; ``%rrr STATEMENT``: run it as a cell would."""
        if statement_head().match(line.strip()):
            self._run(line)
            return None
        try:
            return parse_show(line, FILENAME, bindings=bindable(self.shell.user_ns)).expr
        except RrrdslError as error:
            self.session.report(error)
            raise CellError() from None


def sample_png(result: SampleResult) -> bytes:
    """The PNG a notebook shows for a sample: :func:`rrrdsl.plot.result_figure`."""
    return plot.png(plot.result_figure(result), dpi=80)


def load(shell: Any) -> None:
    """Register the magics with ``shell`` and the picture of a :class:`SampleResult` with its
    display formatter (what ``%load_ext rrrdsl`` calls)."""
    shell.register_magics(RrrMagics(shell))
    shell.display_formatter.formatters["image/png"].for_type(SampleResult, sample_png)
