"""Executing a ``.rrr`` program: the engine of ``rrr run`` and of the REPL.

A :class:`Runner` executes the statements of a :class:`~rrrdsl.lang.program.Program` in order:

===========  ======================================================================================
statement    effect
===========  ======================================================================================
``p = ...``  nothing to do: the parser has already bound the name
``show e``   prints the canonical graph of ``e`` (or the number)
``sample``   compiles ``e`` (cached per graph) and calls :func:`rrrdsl.sample` with the statement's
             sampler, options, ``n`` and ``seed``; writes the samples to ``.npz`` (array ``x``,
             plus ``snapshots`` ``[L, n, D]`` at ``snapshot_levels``) and the diagnostics to a
             ``.json`` beside it
``plot e``   writes PNGs of every sample of ``e`` drawn so far (:func:`rrrdsl.plot.figures`):
             samples over the density, per-level diagnostics, an annealing strip
===========  ======================================================================================

**Checks before work.** :meth:`Runner.check` compiles every sampled or plotted graph and
validates every sampler's options against its target before the first sample is drawn, so
a mistake on line 20 is reported before a minute of sampling on line 3. Every error carries
``file:line:col``, the source line and a caret (the statement's position).

**Atomic outputs.** Every file is written to a temporary file in the same directory and
renamed over its destination (:func:`write_atomic`): an interrupted run (Ctrl-C) never leaves
a half-written output; :func:`run_file` reports the interruption and returns exit code 130.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple, Optional, TextIO, Union

from .errors import InvalidValueError, RrrdslError
from .files import write_atomic
from .lang.ir import Expr
from .lang.lower import Source
from .lang.printer import format_number
from .lang.program import Assign, Plot, Program, Sample, Show, Statement

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: ``n`` of a ``sample`` statement without ``n=`` (that of :func:`rrrdsl.sample`)
DEFAULT_N = 1000
#: environment variable with the default of ``--n-scale`` (tests run the examples with a small N)
N_SCALE_ENV = "RRR_N_SCALE"


class RunOptions(NamedTuple):
    """How a program is run.

    ``out`` is the directory relative outputs go to; ``device`` where samples are drawn;
    ``seed_offset`` is added to every statement's seed (``rrr run --seed``); ``quiet`` turns the
    progress bars and messages off; ``n_scale`` multiplies every ``n`` (at least 1 sample);
    ``write_samples`` writes a ``sample`` without ``-> "path"`` to a default file (``rrr run``)
    or keeps it in memory only (the REPL).
    """

    out: Path = Path(".")
    device: str = "cpu"
    seed_offset: int = 0
    quiet: bool = False
    n_scale: float = 1.0
    write_samples: bool = True


class SampleRecord(NamedTuple):
    """One executed ``sample`` statement: what was sampled, how, the result and the files written."""

    expr: Expr
    label: str
    line: int
    n: int
    seed: int
    result: Any  # rrrdsl.samplers.api.SampleResult
    files: tuple[Path, ...]


def snapshot_levels(num_levels: int) -> tuple[int, ...]:
    """Levels kept for the annealing strip: the start, the middle, and denser towards level 0."""
    last = num_levels - 1
    return tuple(sorted({last, last // 2, last // 5, last // 10, last // 20, 0}, reverse=True))


def _label(expr: Expr, name: Optional[str]) -> str:
    return name if name is not None else str(expr)


def _describe_value(value: Any) -> str:
    return str(value) if isinstance(value, Expr) else format_number(value)


class Runner:
    """Executes statements, keeping compiled targets and the samples drawn so far.

    Parameters
    ----------
    options
        :class:`RunOptions`.
    stdout, stderr
        Where ``show`` output and summaries go, and where messages go.
    """

    def __init__(self, options: RunOptions = RunOptions(), stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> None:
        if not (math.isfinite(options.n_scale) and options.n_scale > 0):
            raise InvalidValueError(f"n_scale must be a finite number > 0, got {options.n_scale!r}")
        self.options = options._replace(out=Path(options.out))
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.records: list[SampleRecord] = []
        self.plots: list[Path] = []
        self._targets: dict[Expr, Any] = {}
        self._default_names: set[str] = set()

    # --- checks -----------------------------------------------------------------------------
    def target(self, expr: Expr) -> Any:
        """The compiled :class:`~rrrdsl.compiler.AnnealedTarget` of ``expr`` (cached)."""
        if expr not in self._targets:
            from .compiler import compile as compile_expr

            self._targets[expr] = compile_expr(expr)
        return self._targets[expr]

    def check(self, program: Program) -> list[RrrdslError]:
        """Every error that running ``program`` would hit before sampling: compile errors,
        unknown samplers and options, out-of-range options, bad output paths. Nothing is sampled."""
        source = Source.of(program.source, program.filename)
        errors = []
        for statement in program.statements:
            try:
                self._check(statement)
            except RrrdslError as error:
                errors.append(source.locate(error, statement.line, statement.column))
        return errors

    def _check(self, statement: Statement) -> None:
        if isinstance(statement, (Sample, Plot)):
            _check_suffix(statement.out, ".npz" if isinstance(statement, Sample) else ".png")
            target = self.target(statement.expr)
            if isinstance(statement, Sample):
                check_sample(target, statement.sampler, self._sample_options(statement, target))

    def _sample_options(self, statement: Sample, target: Any) -> dict[str, Any]:
        defaults = {
            "progress": not self.options.quiet,
            "device": self.options.device,
            "snapshots": snapshot_levels(target.num_levels),
        }
        return {**defaults, **dict(statement.options)}

    # --- execution --------------------------------------------------------------------------
    def run(self, program: Program) -> None:
        """Check every statement, then execute them in order; raises the first check error."""
        errors = self.check(program)
        if errors:
            raise errors[0]
        for statement in program.statements:
            self.execute(statement, program)

    def execute(self, statement: Statement, program: Optional[Program] = None) -> Optional[SampleRecord]:
        """Execute one (checked) statement; returns the record of a ``sample``."""
        if isinstance(statement, Assign):
            return None
        if isinstance(statement, Show):
            text = _describe_value(statement.expr)
            print(f"{statement.target_name} = {text}" if statement.target_name else text, file=self.stdout)
            return None
        if isinstance(statement, Sample):
            return self._sample(statement, program)
        if isinstance(statement, Plot):
            self._plot(statement)
        return None

    def _output(self, out: Optional[str], stem: str, suffix: str) -> Path:
        """The path of an output: the statement's (relative to ``--out``) or a fresh default name."""
        if out is not None:
            return self.options.out / out
        name, k = stem, 1
        while name in self._default_names:
            k += 1
            name = f"{stem}-{k}"
        self._default_names.add(name)
        return self.options.out / f"{name}{suffix}"

    def _sample(self, statement: Sample, program: Optional[Program]) -> SampleRecord:
        from .samplers.api import sample

        target = self.target(statement.expr)
        label = _label(statement.expr, statement.target_name)
        n = max(1, round((statement.n or DEFAULT_N) * self.options.n_scale))
        seed = (statement.seed or 0) + self.options.seed_offset
        if not self.options.quiet:
            how = statement.sampler or "the default sampler"
            print(f"line {statement.line}: sampling {label} with {how}, N={n}", file=self.stderr, flush=True)
        result = sample(target, statement.sampler, n, seed, **self._sample_options(statement, target))
        files: tuple[Path, ...] = ()
        if statement.out is not None or self.options.write_samples:
            stem = f"{statement.target_name or 'sample'}-{result.diagnostics['sampler']}"
            path = self._output(statement.out, stem, ".npz")
            context = {
                "expression": str(statement.expr),
                "n": n,
                "seed": seed,
                "script": program.filename if program is not None else None,
                "line": statement.line,
            }
            files = write_sample(path, result, context)
        record = SampleRecord(statement.expr, label, statement.line, n, seed, result, files)
        self.records.append(record)
        return record

    def _plot(self, statement: Plot) -> list[Path]:
        from . import plot

        target = self.target(statement.expr)
        results = [r.result for r in self.records if r.expr == statement.expr]
        label = _label(statement.expr, statement.target_name)
        path = self._output(statement.out, statement.target_name or "plot", ".png")
        written = []
        for suffix, figure in plot.figures(statement.expr, target, results, label).items():
            destination = path.with_name(path.stem + suffix + path.suffix)
            plot.save_figure(figure, destination)
            written.append(destination)
        self.plots.extend(written)
        if not self.options.quiet:
            print(f"line {statement.line}: wrote " + ", ".join(map(str, written)), file=self.stderr, flush=True)
        return written

    # --- reporting --------------------------------------------------------------------------
    def summary(self) -> str:
        """One line per sample drawn (sampler, N, NFE, acceptance, ESS, time, files), then the plots."""
        lines = [summary_line(record) for record in self.records]
        if self.plots:
            lines.append("plots: " + ", ".join(map(str, self.plots)))
        return "\n".join(lines)


def _check_suffix(out: Optional[str], suffix: str) -> None:
    if out is not None and Path(out).suffix != suffix:
        raise InvalidValueError(f'the output "{out}" must end with {suffix}', hint=f'as in -> "name{suffix}"')


def check_sample(target: Any, sampler: Optional[str], options: dict[str, Any]) -> str:
    """Validate a sampler and its options against ``target`` without sampling; its resolved name."""
    from .samplers.api import check

    return check(target, sampler, **options)


def write_sample(path: Path, result: Any, context: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``x`` (and the snapshots) to ``path`` (``.npz``) and the diagnostics to ``.json`` beside it."""
    import numpy as np

    snapshots = result.diagnostics.get("snapshots") or {}
    levels = sorted(snapshots, reverse=True)
    arrays = {"x": result.x.detach().cpu().numpy()}
    if levels:
        arrays["snapshot_levels"] = np.asarray(levels, dtype=np.int64)
        arrays["snapshots"] = np.stack([snapshots[t].detach().cpu().numpy() for t in levels])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    diagnostics = {k: v for k, v in result.to_dict()["diagnostics"].items() if k != "snapshots"}
    meta = {**context, **diagnostics}
    json_path = path.with_suffix(".json")
    write_atomic(path, buffer.getvalue())
    write_atomic(json_path, (json.dumps(meta, indent=1) + "\n").encode())
    return path, json_path


def _finite(values: Any) -> list[float]:
    return [float(v) for v in values if math.isfinite(float(v))]


def summary_line(record: SampleRecord) -> str:
    """``sample p (line 9): mala, N=1000, NFE/particle 1000, acceptance 0.55-0.81, 12.3 s -> files``."""
    d = record.result.diagnostics
    levels = d["levels"]
    parts = [f"sample {record.label} (line {record.line}): {d['sampler']}", f"N={record.n}", f"NFE/particle {d['nfe']:.0f}"]
    accept = _finite(levels.accept_mean)
    if accept:
        parts.append(f"acceptance {min(accept):.2f}-{max(accept):.2f}")
    ess = _finite(levels.ess)
    if ess:
        resampled = int(sum(float(r) for r in levels.resampled))
        parts.append(f"ESS min {min(ess) / record.n:.2f}N ({resampled} resamplings)")
    if d.get("log_z") is not None and math.isfinite(d["log_z"]):
        parts.append(f"log Z {d['log_z']:.3f}")
    parts.append(f"{d['wall_time']:.1f} s")
    line = ", ".join(parts)
    if record.files:
        line += " -> " + ", ".join(map(str, record.files))
    return line


def run_file(
    path: Union[str, Path],
    options: RunOptions = RunOptions(),
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    """``rrr run``: parse, check, execute a script, print the summary; the exit code.

    0 success; 1 errors in the script (every error is printed, nothing is sampled) or an error
    while running; 2 the file cannot be read; 130 interrupted (Ctrl-C), with finished outputs kept.
    """
    from .lang.parse import check as check_text
    from .lang.parse import parse, read_source

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        text = read_source(path)
    except OSError as exc:
        print(f"rrr: error: cannot read {path}: {exc.strerror or exc}", file=stderr)
        return EXIT_USAGE
    except RrrdslError as error:
        print(error, file=stderr)
        return EXIT_ERRORS
    runner: Optional[Runner] = None
    current: Optional[Statement] = None
    try:
        errors = check_text(text, str(path))
        if not errors:
            program = parse(text, str(path))
            runner = Runner(options, stdout, stderr)
            errors = runner.check(program)
        if errors:
            for error in errors:
                print(error, file=stderr)
            print(f"{len(errors)} error{'s' if len(errors) != 1 else ''}: nothing was run", file=stderr)
            return EXIT_ERRORS
        for current in program.statements:
            runner.execute(current, program)
    except RrrdslError as error:
        where = Source.of(text, str(path))
        located = where.locate(error, current.line, current.column) if current is not None else error
        print(located, file=stderr)
        _print_summary(runner, stdout)
        return EXIT_ERRORS
    except KeyboardInterrupt:
        at = f" at line {current.line}" if current is not None else ""
        print(f"\nrrr: interrupted{at}; no partial file was written", file=stderr)
        _print_summary(runner, stdout)
        return EXIT_INTERRUPTED
    _print_summary(runner, stdout)
    return EXIT_OK


def _print_summary(runner: Optional[Runner], stdout: TextIO) -> None:
    if runner is not None and (runner.records or runner.plots):
        print(runner.summary(), file=stdout)


def n_scale_default() -> float:
    """``--n-scale``'s default: ``$RRR_N_SCALE`` when set, else 1."""
    value = os.environ.get(N_SCALE_ENV)
    return float(value) if value else 1.0
