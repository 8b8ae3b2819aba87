"""Executing a ``.rrr`` program: the engine of ``rrr run`` and of the REPL.

A :class:`Runner` executes the statements of a :class:`~rrrdsl.lang.program.Program` in order:

===========  ======================================================================================
statement    effect
===========  ======================================================================================
``p = ...``  nothing to do: the parser has already bound the name
``show e``   prints the canonical graph of ``e`` (or the number)
``sample``   compiles ``e`` (cached per graph) and calls :func:`rrrdsl.sample` with the statement's
             sampler, options, ``n`` and ``seed``; writes the samples to ``.npz`` (array ``x``,
             ``snapshots`` ``[L, n, D]`` at ``snapshot_levels``, a latent model's decoded ``images``
             also in a ``.png``) and the diagnostics to a ``.json`` beside it, as one unit
``plot e``   writes PNGs of every sample of ``e`` drawn so far (:func:`rrrdsl.plot.figures`):
             samples over the density, per-level diagnostics, an annealing strip
``load``     names a pipeline folder, registered when the program is checked (:mod:`rrrdsl.loads`)
===========  ======================================================================================

**Checks before work.** :meth:`Runner.check` compiles every sampled or plotted graph, validates
every sampler's options, ``n``, ``seed`` and memory against its target, and every output path
(inside ``--out``, not an existing file of another run, not written twice) before the first
sample, so a mistake on line 20 is reported before a minute of sampling on line 3 (``rrr check``
and ``rrr run`` both run :func:`check_file`). Every error carries ``file:line:col``, the source
line and a caret (at the offending option, number, path or leaf argument, else the statement).

**Atomic outputs.** Every file is written to a temporary file in the same directory and
renamed over its destination (:func:`rrrdsl.files.write_together`): an interrupted run (Ctrl-C)
never leaves a half-written output; :func:`run_file` reports the interruption and returns 130.

**Non-finite samples.** A sample with any non-finite row is written (its ``.json`` records
``nonfinite_rows``), named in the summary, and makes the run exit 1, unless its sampler has
``allow_nonfinite=true``.
"""

from __future__ import annotations

import io
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, TextIO, Union

from .errors import InvalidValueError, RrrdslError, SamplerError
from .lang.ir import Expr
from .lang.lower import Source
from .lang.printer import format_number
from .loads import load
from .lang.program import Assign, Load, Plot, Program, Sample, Show, Statement, place
from .outputs import PLOT_FIGURES, Outputs, SampleRecord, nonfinite, plot_unit, sample_files, sample_unit, snapshot_levels, summary_line, verdict_lines

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
    or keeps it in memory only (the REPL); ``force`` replaces existing files that the run did
    not write (``--force``); ``progress`` overrides ``quiet`` for the samplers' progress bars
    (the notebook's cells are quiet but show them: :func:`rrrdsl.samplers.api.progress_bar`);
    ``dtype`` is that of the pipelines ``load`` statements name without ``dtype=``.
    """

    out: Path = Path(".")
    device: str = "cpu"
    seed_offset: int = 0
    quiet: bool = False
    n_scale: float = 1.0
    write_samples: bool = True
    force: bool = False
    progress: Optional[bool] = None
    dtype: str = "float32"


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
    paint
        Colours a line of ``show`` output (the REPL's Pygments colours at a terminal), or None.
    """

    def __init__(
        self,
        options: RunOptions = RunOptions(),
        stdout: Optional[TextIO] = None,
        stderr: Optional[TextIO] = None,
        paint: Optional[Callable[[str], str]] = None,
    ) -> None:
        if not (math.isfinite(options.n_scale) and options.n_scale > 0):
            raise InvalidValueError(f"n_scale must be a finite number > 0, got {options.n_scale!r}")
        self.options = options._replace(out=Path(options.out))
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.paint = paint
        self.records: list[SampleRecord] = []
        self.plots: list[Path] = []
        self.outputs = Outputs(self.options.out, options.force)
        self._targets: dict[Expr, Any] = {}
        self._default_names: set[str] = set()
        self._files: dict[Statement, tuple[Path, ...]] = {}

    # --- checks -----------------------------------------------------------------------------
    def target(self, expr: Expr) -> Any:
        """The compiled :class:`~rrrdsl.compiler.AnnealedTarget` of ``expr`` (cached)."""
        if expr not in self._targets:
            from .compiler import compile as compile_expr

            self._targets[expr] = compile_expr(expr)
        return self._targets[expr]

    def check(self, program: Program) -> list[RrrdslError]:
        """Every error that running ``program`` would hit before sampling: compile errors,
        unknown samplers and options, out-of-range options and numbers, bad output paths,
        existing files, files written twice. Nothing is sampled or written."""
        source = Source.of(program.source, program.filename)
        errors = []
        claimed: dict[Path, int] = {}
        loaded: dict[str, int] = {}
        for statement in program.statements:
            if isinstance(statement, Load):  # registered now: the statements after it compile against it
                found = []
                _collect(found, lambda: load(statement, program.filename, loaded, self.options.device, self.options.dtype, self.options.quiet))
                errors.extend(source.locate(e, *place(statement, e.argument)) for e in found)
            if not isinstance(statement, (Sample, Plot)):
                continue
            found = []
            files = _collect(found, lambda: _at("out", self._plan, statement))
            name = _collect(found, lambda: self._check_statement(statement))
            if not found:
                files = _collect(found, lambda: self._claim(statement, files or self._default_files(statement, name), claimed))
            placed = []
            for error in found:  # at the part of the statement, or at a leaf's argument, else at the statement
                where = place(statement, error.part) if isinstance(error, _Part) else program.argument_place(error.leaf, error.argument)
                placed.append(source.locate(getattr(error, "error", error), *(where or (statement.line, statement.column))))
            errors.extend(e for e in sorted(placed, key=lambda e: (e.line or 0, e.column or 0)) if str(e) not in map(str, errors))
        return errors

    def _claim(self, statement: Union[Sample, Plot], files: tuple[Path, ...], claimed: dict[Path, int]) -> tuple[Path, ...]:
        """Check that ``files`` (a latent model's sample: and its ``.png``) are free and no earlier
        statement writes them; remember them."""
        if isinstance(statement, Sample) and files and self.target(statement.expr).decoder is not None:
            files = _at("out", sample_unit, files[0], True)
        _at("out", self.outputs.check_free, files)
        _at("out", self.outputs.claim, files, claimed, statement.line)
        self._files[statement] = files
        return files

    def _plan(self, statement: Union[Sample, Plot]) -> tuple[Path, ...]:
        """The files of a statement with ``-> "path"`` (checked), else none yet."""
        if statement.out is None:
            return ()
        if isinstance(statement, Sample):
            return sample_unit(self.outputs.path(statement.out, ".npz"))
        return plot_unit(self.outputs.path(statement.out, ".png"))

    def _check_statement(self, statement: Union[Sample, Plot]) -> Optional[str]:
        """Compile the statement's graph; for a sample, check its numbers and sampler (the
        resolved sampler's name)."""
        from .samplers.api import check, check_n, check_seed

        target = self.target(statement.expr)
        if not isinstance(statement, Sample):
            return None
        n = self._n(statement)
        _at("seed", check_seed, self._seed(statement))
        _at("n", check_n, n)
        try:
            return check(target, statement.sampler, n, **self._sample_options(statement, target))
        except SamplerError as error:  # at the option when the statement writes it
            if error.option in dict(statement.options):
                raise _Part(error, error.option) from None
            raise

    def _default_files(self, statement: Union[Sample, Plot], sampler: Optional[str]) -> tuple[Path, ...]:
        """The files of a statement without ``-> "path"``: a fresh default name, or none (REPL)."""
        if isinstance(statement, Plot):
            return plot_unit(self._default(statement.target_name or "plot", ".png"))
        if not self.options.write_samples:
            return ()
        return sample_unit(self._default(f"{statement.target_name or 'sample'}-{sampler}", ".npz"))

    def _n(self, statement: Sample) -> int:
        """The statement's ``n`` times ``--n-scale`` (at least 1; unscaled when that overflows,
        for the range check to refuse)."""
        n = statement.n or DEFAULT_N
        if self.options.n_scale == 1:
            return n
        scaled = n * self.options.n_scale if n < 2**1000 else math.inf
        return max(1, round(scaled)) if math.isfinite(scaled) else n

    def _seed(self, statement: Sample) -> int:
        return (statement.seed or 0) + self.options.seed_offset

    def _sample_options(self, statement: Sample, target: Any) -> dict[str, Any]:
        defaults = {
            "progress": not self.options.quiet if self.options.progress is None else self.options.progress,
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
        if isinstance(statement, (Assign, Load)):
            return None
        if isinstance(statement, Show):
            text = _describe_value(statement.expr)
            line = f"{statement.target_name} = {text}" if statement.target_name else text
            print(self.paint(line) if self.paint else line, file=self.stdout)
            return None
        if isinstance(statement, Sample):
            return self._sample(statement, program)
        if isinstance(statement, Plot):
            self._plot(statement)
        return None

    def _default(self, stem: str, suffix: str) -> Path:
        """A fresh default output name in ``--out``: ``stem``, ``stem-2``, ..."""
        name, k = stem, 1
        while name in self._default_names:
            k += 1
            name = f"{stem}-{k}"
        self._default_names.add(name)
        return self.outputs.path(f"{name}{suffix}", suffix)

    def _planned(self, statement: Union[Sample, Plot]) -> tuple[Path, ...]:
        """The files a checked statement writes (checked now when it was not)."""
        if statement not in self._files:
            errors = self.check(Program((statement,), "", None))
            if errors:
                raise errors[0]
        return self._files[statement]

    def _sample(self, statement: Sample, program: Optional[Program]) -> SampleRecord:
        from .samplers.api import sample

        target = self.target(statement.expr)
        label = _label(statement.expr, statement.target_name)
        planned = self._planned(statement)
        n, seed = self._n(statement), self._seed(statement)
        if not self.options.quiet:
            how = statement.sampler or "the default sampler"
            print(f"line {statement.line}: sampling {label} with {how}, N={n}", file=self.stderr, flush=True)
        result = sample(target, statement.sampler, n, seed, **self._sample_options(statement, target))
        if planned and _writes():
            context = {
                "expression": str(statement.expr),
                "n": n,
                "seed": seed,
                "script": program.filename if program is not None else None,
                "line": statement.line,
            }
            self.outputs.write(sample_files(planned[0], result, context))
        record = SampleRecord(statement.expr, label, statement.line, n, seed, result, planned)
        self.records.append(record)
        return record

    def _plot(self, statement: Plot) -> list[Path]:
        from . import plot

        if not _writes():
            return []
        target = self.target(statement.expr)
        results = [r.result for r in self.records if r.expr == statement.expr]
        label = _label(statement.expr, statement.target_name)
        unit = dict(zip(PLOT_FIGURES, self._planned(statement)))
        pictures = {unit[suffix]: plot.png(figure) for suffix, figure in plot.figures(statement.expr, target, results, label).items()}
        self.outputs.write(pictures)
        written = list(pictures)
        self.plots.extend(written)
        if not self.options.quiet:
            print(f"line {statement.line}: wrote " + ", ".join(map(str, written)), file=self.stderr, flush=True)
        return written

    # --- reporting --------------------------------------------------------------------------
    def summary(self) -> str:
        """Per sample drawn a summary line and its models' verdicts (:func:`~rrrdsl.outputs.verdict_lines`), then the plots."""
        lines = [line for record in self.records for line in (summary_line(record), *verdict_lines(record))]
        if self.plots:
            lines.append("plots: " + ", ".join(map(str, self.plots)))
        return "\n".join(lines)


class _Part(Exception):
    """An error of one part of a statement (``"out"``, ``"n"``, ``"seed"``): placed at its token."""

    def __init__(self, error: RrrdslError, part: str) -> None:
        super().__init__(error.message)
        self.error, self.part = error, part


def _collect(found: list[Exception], step: Callable[[], Any]) -> Any:
    """``step()``, or None after appending the error it raised to ``found``."""
    try:
        return step()
    except (_Part, RrrdslError) as error:
        found.append(error)
        return None


def _at(part: str, check: Any, *args: Any) -> Any:
    """``check(*args)``; an error it raises belongs to ``part`` of the statement."""
    try:
        return check(*args)
    except RrrdslError as error:
        raise _Part(error, part) from None


class Checked(NamedTuple):
    """A script after :func:`check_file`: its text and program (None when it did not parse or
    could not be read), a runner holding the checked targets and outputs, and every error."""

    text: Optional[str]
    program: Optional[Program]
    runner: Optional[Runner]
    errors: list[RrrdslError]


def check_file(path: Union[str, Path], options: RunOptions = RunOptions(), stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> Checked:
    """Every error ``rrr run`` would find before running ``path``: ``rrr check`` and ``rrr run``
    both call this. ``OSError`` when the file cannot be read."""
    from .lang.parse import check as check_text
    from .lang.parse import parse, read_source

    try:
        text = read_source(path)
    except RrrdslError as error:  # not UTF-8, too large
        return Checked(None, None, None, [error])
    errors = check_text(text, str(path))
    if errors:
        return Checked(text, None, None, errors)
    program = parse(text, str(path))
    runner = Runner(options, stdout, stderr)
    return Checked(text, program, runner, runner.check(program))


def run_file(
    path: Union[str, Path],
    options: RunOptions = RunOptions(),
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    """``rrr run``: check (:func:`check_file`), execute a script, print the summary; the exit code.

    0 success; 1 errors in the script (every error is printed, nothing is sampled), an error
    while running, or non-finite samples without ``allow_nonfinite``; 2 the file cannot be
    read; 130 interrupted (Ctrl-C), with finished outputs kept.

    Under ``torchrun`` every process runs the script on its shard of each sample
    (:mod:`rrrdsl.samplers.distributed`); rank 0 alone prints and writes the outputs. An
    error on any rank ends every rank with exit 1 and the first error's message.
    """
    from .samplers.distributed import failing_together

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    runner: Optional[Runner] = None
    current: Optional[Statement] = None
    try:
        with failing_together() as group:
            if group.rank != 0:  # rank 0 alone reports and writes
                options, stdout = options._replace(quiet=True), io.StringIO()
            text, program, runner, errors = check_file(path, options, stdout, stderr)
            if errors:
                for error in errors if group.rank == 0 else ():
                    print(error, file=stderr)
                if group.rank == 0:
                    print(f"{len(errors)} error{'s' if len(errors) != 1 else ''}: nothing was run", file=stderr)
                group.fail(errors[0])
                return EXIT_ERRORS
            for current in program.statements:
                runner.execute(current, program)
            group.barrier()  # no rank exits 0 while another failed
    except OSError as exc:
        if runner is None:
            print(f"rrr: error: cannot read {path}: {exc.strerror or exc}", file=stderr)
            return EXIT_USAGE
        where = f"line {current.line}: " if current is not None else ""
        print(f"rrr: {where}cannot write: {exc.strerror or exc}{' (' + exc.filename + ')' if exc.filename else ''}", file=stderr)
        _print_summary(runner, stdout)
        return EXIT_ERRORS
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
    bad = [r for r in runner.records if nonfinite(r)]
    for record in bad:
        rows = record.result.diagnostics["nonfinite_rows"]
        print(
            f"rrr: line {record.line}: {rows} of {record.n} samples of {record.label} are not finite (NaN or inf); "
            "smaller step sizes may help, and allow_nonfinite=true in the sampler's options accepts them",
            file=stderr,
        )
    return EXIT_ERRORS if bad else EXIT_OK


def _writes() -> bool:
    """Whether this process writes outputs: the only one, or rank 0 of a ``torchrun`` group."""
    from .samplers.distributed import current

    return current().rank == 0


def _print_summary(runner: Optional[Runner], stdout: TextIO) -> None:
    if runner is not None and (runner.records or runner.plots):
        print(runner.summary(), file=stdout)


def n_scale_default() -> float:
    """``--n-scale``'s default: ``$RRR_N_SCALE`` when set, else 1."""
    value = os.environ.get(N_SCALE_ENV)
    return float(value) if value else 1.0
