"""The hostile corpus (``tests/hostile/corpus.txt``): every entry through ``rrr check`` and
``rrr run``, in-process and (a handful) through the installed command.

For every entry: the exit code, error class and ``line:col`` it states; ``rrr check`` and
``rrr run`` agree on the errors found before work; and whatever happens, no traceback, no file
outside ``--out`` (a victim file beside it stays as it was), no ``.json`` that does not describe
the ``.npz`` beside it, and no exit 0 with a non-finite sample.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import pytest

from rrrdsl.cli import main
from rrrdsl.run import RunOptions, check_file

CORPUS = Path(__file__).parent / "hostile" / "corpus.txt"
VICTIM = "settings.json"
#: ``{deep}`` in a program: a depth-200 alternation of mixtures and powers
DEEP = 'oracle("ring")'
for _depth in range(200):
    DEEP = f'({DEEP} + oracle("bar")) ** 0.99' if _depth % 2 == 0 else f'({DEEP} * oracle("gauss") ** 0.5 + oracle("ring_left"))'


class Entry(NamedTuple):
    name: str
    exit: int
    error: Optional[str]
    where: Optional[str]
    flags: list[str]
    program: str


def entries() -> list[Entry]:
    found, header, lines = [], None, []
    for line in [*CORPUS.read_text().splitlines(), "### end"]:
        if line.startswith("### "):
            if header is not None:
                name, code, error, where, flags = (part.strip() for part in header.split("|"))
                program = "\n".join(lines).replace("{long}", "a" * 300).replace("{deep}", DEEP) + "\n"
                found.append(Entry(name, int(code), None if error == "-" else error, None if where == "-" else where, [] if flags == "-" else shlex.split(flags), program))
            header, lines = line[4:], []
        elif header is not None and not line.startswith("#"):
            lines.append(line)
    return found


ENTRIES = entries()


def prepare(tmp_path: Path, entry: Entry) -> tuple[Path, Path]:
    """The script, and an output folder holding another run's files, a folder, a file and a
    link to a victim folder beside it."""
    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.mkdir()
    (victim / VICTIM).write_text("victim")
    out.mkdir()
    (out / "folder.npz").mkdir()
    (out / "file").write_text("a file")
    (out / "mine.json").write_text("another program's settings")
    for name in ("theirs", "sample-ddim"):
        (out / f"{name}.npz").write_bytes(b"not ours")
        (out / f"{name}.json").write_text("{}")
    os.symlink(victim, out / "link")
    script = tmp_path / "s.rrr"
    script.write_text(entry.program, encoding="utf-8")
    return script, out


def snapshot(tmp_path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "out" not in p.relative_to(tmp_path).parts[:1]}


def check_outputs(tmp_path: Path, out: Path, before: dict[str, bytes], code: int) -> None:
    """Nothing outside ``out`` changed, every new .json describes its .npz, no silent NaN."""
    assert snapshot(tmp_path) == before
    assert not Path("/tmp/rrr-hostile-absolute.npz").exists()
    assert not [p for p in out.rglob(".*") if p.suffix in (".tmp", ".old")]
    for meta_path in out.rglob("*.json"):
        if meta_path.stem in ("theirs", "sample-ddim", "mine") and meta_path.read_text() in ("{}", "another program's settings"):
            continue  # another run's files, left alone
        meta = json.loads(meta_path.read_text())
        npz = meta_path.with_suffix(".npz")
        assert hashlib.sha256(npz.read_bytes()).hexdigest() == meta["npz_sha256"], meta_path
        if code == 0:
            assert meta["nonfinite_rows"] == 0 or meta["options"]["allow_nonfinite"]
            x = np.load(npz)["x"]
            assert np.isfinite(x).all() or meta["options"]["allow_nonfinite"]


def options(out: Path, flags: list[str]) -> RunOptions:
    seed = int(flags[flags.index("--seed") + 1]) if "--seed" in flags else 0
    scale = float(flags[flags.index("--n-scale") + 1]) if "--n-scale" in flags else 1.0
    return RunOptions(out, seed_offset=seed, quiet=True, n_scale=scale, force="--force" in flags)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_entry(tmp_path: Path, entry: Entry, capsys: pytest.CaptureFixture[str]) -> None:
    script, out = prepare(tmp_path, entry)
    before = snapshot(tmp_path)
    if entry.exit == 2:  # bad flags: both commands refuse them as usage errors
        assert main(["check", str(script), "--out", str(out), *entry.flags]) == 2
        assert main(["run", str(script), "--out", str(out), *entry.flags]) == 2
        assert "rrr: error: --" in capsys.readouterr().err
        return check_outputs(tmp_path, out, before, 2)
    errors = check_file(script, options(out, entry.flags)).errors
    if entry.error is not None:
        assert errors and type(errors[0]).__name__ == entry.error, errors
        if entry.where is not None:
            assert f"{errors[0].line}:{errors[0].column}" == entry.where, str(errors[0])
    else:
        assert not errors, "\n".join(map(str, errors))
    check_code = main(["check", str(script), "--out", str(out), *entry.flags])
    captured = capsys.readouterr()
    assert check_code == (1 if errors else 0)
    assert all(str(e) in captured.out for e in errors)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["run", str(script), "--out", str(out), "--quiet", *entry.flags])
    captured = capsys.readouterr()
    assert code == entry.exit, stderr.getvalue() + captured.err
    assert "Traceback" not in stderr.getvalue() + captured.err
    if errors:  # rrr run reports what rrr check found, and runs nothing
        assert str(errors[0]) in stderr.getvalue() + captured.err
    check_outputs(tmp_path, out, before, code)


def test_the_corpus_covers_every_class() -> None:
    classes = {e.name.split(":")[0] for e in ENTRIES}
    assert classes == {"out", "check", "numbers", "nonfinite", "clean", "language", "learned"} and len(ENTRIES) >= 100


CLI_NAMES = (
    "out: parent folder",
    "numbers: seed beyond 64 bits",
    "nonfinite: reverse diffusion over a box of 1e300",
    "out: a file as parent",
    "language: a constant that overflows under a power",
    "learned: a learned model under a negative power",
    "numbers: a --seed beyond 64 bits",
)
CLI = [e for e in ENTRIES if e.name in CLI_NAMES]


@pytest.mark.parametrize("entry", CLI, ids=[e.name for e in CLI])
def test_entry_through_the_command(tmp_path: Path, entry: Entry) -> None:
    script, out = prepare(tmp_path, entry)
    before = snapshot(tmp_path)
    rrr = [sys.executable, "-m", "rrrdsl.cli"]
    checked = subprocess.run([*rrr, "check", str(script), "--out", str(out), *entry.flags], capture_output=True, text=True, timeout=120)
    ran = subprocess.run([*rrr, "run", str(script), "--out", str(out), "--quiet", *entry.flags], capture_output=True, text=True, timeout=120)
    assert checked.returncode == (entry.exit if entry.exit == 2 else 1 if entry.error else 0) and ran.returncode == entry.exit, ran.stderr
    assert "Traceback" not in checked.stderr + ran.stderr
    check_outputs(tmp_path, out, before, ran.returncode)


def test_check_reports_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.rrr", tmp_path / "bad.rrr"
    good.write_text('sample oracle("ring") using reverse n=4 -> "g.npz"\n')
    bad.write_text('sample oracle("ring") using nust n=4\n')
    assert main(["check", str(good), str(tmp_path / "missing.rrr"), str(bad), "/dev/zero", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert f"{good}: ok" in captured.out and "unknown sampler 'nust'" in captured.out
    assert "/dev/zero is larger than 1,000,000 bytes" in captured.out
    assert "cannot read" in captured.err and "missing.rrr" in captured.err


def test_the_repl_over_stdin_keeps_its_bindings_after_every_error(tmp_path: Path) -> None:
    """``rrr repl`` with piped input: each fault of the language layer is a placed error on
    stderr, the session goes on, and the names bound before it are still bound."""
    lines = [
        'a = oracle("ring")',
        '(2 * a) ** 1e308',
        'b = 1e308 * a + 1e308 * oracle("bar")',
        'model("ring", schedule=1)',
        'c = (a ** 1e200) ** 1e200',
        ':sample model("ring") ** -1 using mala n=10',
        ':sample oracle("ring") using hmc(leapfrog=1000000000) n=4',
        "show a",
    ]
    ran = subprocess.run(
        [sys.executable, "-m", "rrrdsl.cli", "repl", "--out", str(tmp_path)], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr
    assert ran.stdout.rstrip().endswith('a = oracle("ring")'), ran.stdout
    placed = [line for line in ran.stderr.splitlines() if line.startswith("<repl>:1:")]  # each input is placed on its own
    assert [p.split(": ", 1)[1][:28] for p in placed] == [
        "the constant factor 2 ** 1e+",
        "mixture weights must be fini",
        "model(...) takes no argument",
        'the exponent of oracle("ring',
        'model("ring") ** -1 is not n',
        "90 steps at each of 10 level",
    ], ran.stderr
    assert list(tmp_path.iterdir()) == []
