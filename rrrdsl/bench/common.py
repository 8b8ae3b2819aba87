"""Pieces every benchmark shares: constants of the 2D comparisons, markdown rows and tables,
provenance, report templates and atomic writes.

A report is a template under ``rrrdsl/bench/templates/`` (``string.Template``, ``$name``
fields) filled with the measured values and written atomically
(:func:`rrrdsl.files.write_atomic`), so a report is never half-written.
"""

from __future__ import annotations

import datetime
import os
import platform
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Mapping, NamedTuple, Sequence, Union

import torch

from ..files import write_atomic

#: RBF bandwidth of every MMD
BANDWIDTH = 0.05
#: radius around a ring mode that counts as "in the mode"
RADIUS = 0.1
#: seeds of the exact reference sample and of the floor's exact pairs
TRUTH_SEED = 10_000
FLOOR_SEEDS = range(20_000, 20_005)
#: default output directory (relative to the working directory: the repository root)
RESULTS = Path("benchmarks") / "results"

#: a table row: a mapping from column header to cell, or a NamedTuple (headers: its fields)
Row = Union[Mapping[str, Any], NamedTuple]


def ring_centers() -> torch.Tensor:
    """The 8 ring means at level 0 (``sqrt(alpha_bar_0)`` times the clean ones), ``[8, 2]``."""
    from .. import schedules
    from ..models.registry import RING_RADIUS, RING_SIZE

    angle = torch.arange(RING_SIZE, dtype=torch.float64) * 2 * torch.pi / RING_SIZE
    scale = float(schedules.default().alpha_bar[0]) ** 0.5
    return RING_RADIUS * scale * torch.stack([torch.cos(angle), torch.sin(angle)], 1)


def _cells(row: Row) -> Mapping[str, Any]:
    return row._asdict() if hasattr(row, "_asdict") else row  # type: ignore[union-attr]


def format_row(row: Row) -> str:
    """One markdown table row: floats with 4 significant digits, ``None`` as a dash."""
    cells = []
    for value in _cells(row).values():
        if isinstance(value, float):
            cells.append(f"{value:.4g}")
        else:
            cells.append("—" if value is None else str(value))
    return "| " + " | ".join(cells) + " |"


def markdown_table(rows: Sequence[Row], header: Sequence[str] = ()) -> list[str]:
    """A markdown table of rows sharing their columns; the header is ``header`` when given,
    otherwise the first row's keys (or field names)."""
    header = list(header) or list(_cells(rows[0]))
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *(format_row(r) for r in rows)]


def mean_se(values: Sequence[float], digits: str = ".3g", se_digits: str = ".2g") -> str:
    """``mean ± standard error`` of ``values`` over seeds (the sample standard deviation over
    ``sqrt(len)``), formatted with ``digits`` / ``se_digits``; one value: the mean alone."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:{digits}}"
    se = (sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) ** 0.5
    return f"{mean:{digits}} ± {se:{se_digits}}"


def provenance(command: str) -> str:
    """Markdown bullet lines: the command, UTC date, machine, torch and python versions."""
    return "\n".join(
        [
            f"- command: `{command}`",
            f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
            f"{platform.system()} {platform.release()}; {torch.get_num_threads()} torch thread(s)",
            f"- torch {torch.__version__}, python {platform.python_version()}",
        ]
    )


def render(template: str, **fields: Any) -> str:
    """The report template ``templates/<template>.md`` with its ``$fields`` filled in; list
    values (table lines) are joined by newlines. A missing field is an error (``KeyError``)."""
    text = resources.files(__package__).joinpath("templates", f"{template}.md").read_text(encoding="utf-8")
    values = {k: "\n".join(v) if isinstance(v, list) else v for k, v in fields.items()}
    return Template(text).substitute(values)


def write_report(path: Path, text: str) -> Path:
    """Write ``text`` (ending in one newline) to ``path`` atomically; returns ``path``."""
    write_atomic(path, (text.rstrip("\n") + "\n").encode())
    return path


def first_line(error: Exception) -> str:
    """The first line of an error's message (a table cell says why in one line)."""
    return str(error).splitlines()[0]


# --- what the reports quote from the samplers' defaults (the only place that reads them) ---


def sampler_defaults() -> dict[str, dict]:
    """Each sampler's default options, as the reports quote them (sampler name -> options)."""
    from ..samplers.api import DEFAULTS

    return DEFAULTS


def ula_step_scale() -> float:
    """ULA's default step-size scale ``c`` of ``c * beta_t ** b``."""
    from ..samplers.langevin import ULA_ANNEALED

    return ULA_ANNEALED.step_scale


def line_integral_target_accept() -> float:
    """The acceptance that step sizes adapt toward under ``mh="line_integral"``."""
    from ..samplers.line_integral import TARGET_ACCEPT

    return TARGET_ACCEPT
