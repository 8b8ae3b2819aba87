"""``rrr repl``: an interactive session over the same statements as ``.rrr`` scripts.

Input is a statement (``p = ...``, ``sample ...``, ``plot ...``, ``show ...``), an expression
alone (its canonical graph is printed), or a command:

=========================  ===========================================================
``:help``                  this list
``:models``                the models and oracles expressions can name
``:show EXPR``             the canonical graph of ``EXPR`` (a name or any expression)
``:dot EXPR``              its Graphviz ``dot`` text
``:sample EXPR [...]``     as the ``sample`` statement (``using``, ``n=``, ``seed=``, ``->``)
``:plot [EXPR] [-> PATH]`` as the ``plot`` statement; without ``EXPR``, the last sample's
``:load FILE``             run a ``.rrr`` file in this session (its names stay bound)
``:quit``                  leave (so does end of input)
=========================  ===========================================================

A line continues while a parenthesis or bracket is open. An error prints its message with
the caret and the session goes on with its bindings intact. At a terminal, lines are edited
with readline (when available), the history is kept in ``~/.rrrdsl_history``, and the source
line of an error is coloured when Pygments is installed (not with ``$NO_COLOR`` set); with
piped input there are no prompts, so a transcript reads cleanly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, TextIO

from .errors import RrrdslError, UnknownNameError, suggest
from .lang.grammar import statement_head
from .lang.parse import parse, parse_show, read_source, statement_end
from .lang.printer import to_dot
from .lang.program import Binding, Plot, Program, Show
from .run import RunOptions, Runner, summary_line

HISTORY = Path("~/.rrrdsl_history").expanduser()
HISTORY_LENGTH = 2000
PROMPT, CONTINUE = "rrr> ", "...> "
FILENAME = "<repl>"
#: the name `:plot` binds to the last sample's expression while it reads its arguments
LAST = "last_sample"

HELP = """\
statements:   p = oracle("ring") * oracle("bar")      sample p using mala n=500
              plot p -> "p.png"                        show p
an expression alone prints its canonical graph:  p ** 2 / oracle("gauss")
commands:
  :help                    this text
  :models                  the models and oracles expressions can name
  :show EXPR               the canonical graph of EXPR
  :dot EXPR                its Graphviz dot text
  :sample EXPR [using SAMPLER(opt=value, ...)] [n=N] [seed=S] [-> "file.npz"]
  :plot [EXPR] [-> "file.png"]   plot EXPR (default: the last sample's expression)
  :load FILE               run a .rrr file here; its names stay bound
  :quit                    leave (also Ctrl-D)
a line continues while a ( or [ is open."""


def models_table() -> str:
    """Every name an expression can use, with its description, one per line."""
    from .models.registry import list_models

    table = list_models()
    width = max(map(len, table))
    return "\n".join(f"{name.ljust(width)}  {description}" for name, description in table.items())


def incomplete(text: str) -> bool:
    """Whether ``text`` ends inside an open parenthesis or bracket (more lines must follow)."""
    return statement_end(text + "\n", 0) > len(text)


class Session:
    """One REPL session: its bindings, its :class:`~rrrdsl.run.Runner` (samples so far), its I/O.

    Parameters
    ----------
    out
        Directory for plots and for samples written with ``-> "path"``.
    force
        Replace files in ``out`` that this session did not write (``rrr repl --force``).
    progress
        Show the samplers' progress bars (default: only when ``stdin`` is a terminal).
    n_scale
        Multiplies every ``sample``'s ``n`` (``rrr run --n-scale``).
    stdin, stdout, stderr
        The streams (the process's by default); prompts and readline only when ``stdin`` is a
        terminal.
    """

    def __init__(
        self,
        out: Path = Path("."),
        stdin: Optional[TextIO] = None,
        stdout: Optional[TextIO] = None,
        stderr: Optional[TextIO] = None,
        force: bool = False,
        progress: Optional[bool] = None,
        n_scale: float = 1.0,
    ) -> None:
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.interactive = self.stdin.isatty()
        self.paint = _painter(self.stderr)
        options = RunOptions(out=out, quiet=not self.interactive, write_samples=False, force=force, progress=progress, n_scale=n_scale)
        self.runner = Runner(options, self.stdout, self.stderr, paint=_painter(self.stdout))
        self.bindings: dict[str, Binding] = {}
        self._commands: dict[str, Callable[[str], bool]] = {
            "help": self._help,
            "models": self._models,
            "show": self._show,
            "dot": self._dot,
            "sample": self._sample,
            "plot": self._plot,
            "load": self._load,
            "quit": self._quit,
        }

    # --- the loop ---------------------------------------------------------------------------
    def loop(self) -> int:
        """Read and handle inputs until ``:quit`` or end of input; the exit code (0)."""
        history = self._start_readline()
        try:
            while True:
                try:
                    text = self._read()
                except KeyboardInterrupt:
                    print(file=self.stdout)
                    continue
                if text is None or not self.handle(text):
                    break
        finally:
            if history is not None:
                history()
        return 0

    def _read(self) -> Optional[str]:
        """One complete input (several lines while brackets are open); None at end of input."""
        lines: list[str] = []
        while True:
            line = self._line(CONTINUE if lines else PROMPT)
            if line is None:
                if lines:  # end of input inside brackets: handle what there is (an error says so)
                    return "\n".join(lines)
                if self.interactive:
                    print(file=self.stdout)
                return None
            lines.append(line)
            if not incomplete("\n".join(lines)):
                return "\n".join(lines)

    def _line(self, prompt: str) -> Optional[str]:
        if self.interactive:
            try:
                return input(prompt)
            except EOFError:
                return None
        line = self.stdin.readline()
        return line.rstrip("\n") if line else None

    def _start_readline(self) -> Optional[Callable[[], None]]:
        """Line editing and history at a terminal; returns what saves the history."""
        if not self.interactive:
            return None
        try:
            import readline
        except ImportError:
            return None
        try:
            readline.read_history_file(HISTORY)
        except OSError:
            pass
        readline.set_history_length(HISTORY_LENGTH)

        def save() -> None:
            try:
                readline.write_history_file(HISTORY)
            except OSError:
                pass

        return save

    # --- one input --------------------------------------------------------------------------
    def handle(self, text: str) -> bool:
        """Handle one input; False when the session should end. Errors are printed, not raised."""
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            return True
        try:
            if stripped.startswith(":"):
                return self._command(text)
            if statement_head().match(stripped):
                self._execute(self._parse(text))
            else:
                self._expression(text)
        except RrrdslError as error:
            self.report(error)
        except KeyboardInterrupt:
            print("interrupted", file=self.stderr)
        return True

    def report(self, error: RrrdslError) -> None:
        """Print an error (its source line in colour at a terminal)."""
        print(error.format(self.paint), file=self.stderr)

    def run(self, text: str, filename: str = FILENAME) -> bool:
        """Run a whole program in this session (a notebook cell): every statement is checked,
        then run. An error is printed, not raised; one found by the checks leaves the bindings
        as they were. False after an error."""
        try:
            return self._execute(parse(text, filename, bindings=self.bindings))
        except RrrdslError as error:
            self.report(error)
        except KeyboardInterrupt:
            print("interrupted", file=self.stderr)
        return False

    def _parse(self, text: str, original: Optional[str] = None) -> Program:
        """Parse a program with the session's bindings. ``original`` is what the user typed when
        ``text`` is a command's arguments with the command blanked out (same columns): errors
        and later messages show the original line."""
        try:
            program = parse(text, FILENAME, bindings=self.bindings)
        except RrrdslError as error:
            raise _as_typed(error, original) from None
        # later errors (compile, sampler options) are placed on the statement: show what was typed
        return replace(program, source=original) if original is not None else program

    def _execute(self, program: Program, bind: bool = True) -> bool:
        """Check every statement of ``program``, then run them; with ``bind`` its names join the
        session. False when a check failed (the errors are printed, nothing runs)."""
        errors = self.runner.check(program)
        for error in errors:
            self.report(error)
        if errors:
            return False
        if bind:
            self.bindings = dict(program.bindings)
        for statement in program.statements:
            record = self.runner.execute(statement, program)
            if record is not None:
                print(summary_line(record), file=self.stdout)
        return True

    def _subject(self, text: str, original: Optional[str] = None) -> Show:
        """An expression (the grammar's ``expression`` start symbol) as the statement showing it."""
        try:
            return parse_show(text, FILENAME, bindings=self.bindings)
        except RrrdslError as error:
            raise _as_typed(error, original) from None

    def _expression(self, text: str, original: Optional[str] = None) -> None:
        """Print the canonical graph of an expression."""
        statement = self._subject(text, original)
        self.runner.execute(statement, Program((statement,), original or text, FILENAME))

    # --- commands ---------------------------------------------------------------------------
    def _command(self, text: str) -> bool:
        head, _, rest = text.strip()[1:].partition(" ")
        rest = text.strip()[len(head) + 1 :]
        if head not in self._commands:
            known = ", ".join(f":{c}" for c in self._commands)
            raise UnknownNameError(f"unknown command ':{head}'", hint=suggest(head, self._commands) or f"commands: {known}")
        return self._commands[head](rest)

    def _help(self, rest: str) -> bool:
        print(HELP, file=self.stdout)
        return True

    def _models(self, rest: str) -> bool:
        print(models_table(), file=self.stdout)
        return True

    def _show(self, rest: str) -> bool:
        self._expression(" " * len(":show") + rest, ":show" + rest)
        return True

    def _dot(self, rest: str) -> bool:
        statement = self._subject(" " * len(":dot") + rest, ":dot" + rest)
        print(to_dot(statement.expr, statement.target_name), file=self.stdout)  # type: ignore[arg-type]
        return True

    def _sample(self, rest: str) -> bool:
        # " sample ..." keeps every column of ":sample ..."
        self._execute(self._parse(" sample" + rest, ":sample" + rest))
        return True

    def _plot(self, rest: str) -> bool:
        text = rest.strip()
        if text and not text.startswith("->"):
            self._execute(self._parse(" plot" + rest, ":plot" + rest))
            return True
        if not self.runner.records:
            raise RrrdslError("nothing to plot yet", hint="sample something first, or say what to plot: :plot EXPR")
        last = self.runner.records[-1]
        # the last sample's expression, with the optional `-> "path"` read by the parser
        source = f"plot {LAST} {text}"
        parsed = parse(source, FILENAME, bindings={**self.bindings, LAST: last.expr}).statements[0]
        name = last.label if last.label != str(last.expr) else None
        statement = Plot(last.expr, name, parsed.out, 1, 1)  # type: ignore[union-attr]
        self._execute(Program((statement,), source, FILENAME), bind=False)
        return True

    def _load(self, rest: str) -> bool:
        path = rest.strip().strip('"')
        if not path:
            raise RrrdslError("which file?", hint='as in :load examples/ring_bar.rrr')
        try:
            text = read_source(path)
        except OSError as exc:
            raise RrrdslError(f"cannot read {path}: {exc.strerror or exc}") from None
        self._execute(parse(text, path, bindings=self.bindings))
        return True

    def _quit(self, rest: str) -> bool:
        return False


def _painter(stream: TextIO) -> Optional[Callable[[str], str]]:
    """What colours source lines in errors and the echo of ``show``: Pygments' colours when
    ``stream`` is a terminal, Pygments is installed and ``$NO_COLOR`` is unset
    (https://no-color.org); else None."""
    if os.environ.get("NO_COLOR") or not stream.isatty():
        return None
    try:
        from .highlight import paint_terminal
    except ImportError:
        return None
    return paint_terminal


def _as_typed(error: RrrdslError, original: Optional[str]) -> RrrdslError:
    """An error in a command's arguments, shown on the line as typed (the columns are the same)."""
    if original is None or error.line != 1:
        return error
    return error.with_location(source_line=original.split("\n")[0])
