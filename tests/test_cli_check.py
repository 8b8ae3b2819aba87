"""``rrr check``: every error of every file, and the exit codes 0 / 1 / 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import rrrdsl
from rrrdsl.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ring_bar.rrr"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_clean_files_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = write(tmp_path, "other.rrr", 'a = oracle("ring")\nshow a ** 2\n')
    assert main(["check", str(EXAMPLE), other]) == 0
    out = capsys.readouterr().out
    assert f"{EXAMPLE}: ok" in out and f"{other}: ok" in out


def test_every_error_of_every_file_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = write(tmp_path, "first.rrr", 'p = modle("ring")\nq = (oracle("a") *\n')
    second = write(tmp_path, "second.rrr", "x = 1 / 0\nshow oracle(\"a\") - oracle(\"b\")\n")
    clean = write(tmp_path, "clean.rrr", "show oracle(\"a\")\n")
    assert main(["check", first, second, clean]) == 1
    out = capsys.readouterr().out
    assert f"{first}:1:5: 'modle' is an unknown function" in out
    assert f"{first}:2:19: unexpected end of the file" in out
    assert f"{second}:1:7: division by zero" in out
    assert f"{second}:2:18: densities cannot be subtracted" in out
    assert f"{clean}: ok" in out
    assert "4 errors in 3 files" in out
    assert '    p = modle("ring")\n        ^\n' in out  # the source line and a caret


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "missing.rrr")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["check"]) == 2  # no file
    assert main([]) == 2  # no command
    assert main(["frobnicate"]) == 2


def test_a_file_that_is_not_utf8_is_an_error_of_that_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.rrr"
    path.write_bytes(b'show oracle("caf\xe9")\n')
    assert main(["check", str(path)]) == 1
    assert f"{path}:1:17: the file is not UTF-8 text" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rrr {rrrdsl.__version__}"


def test_the_installed_command(tmp_path: Path) -> None:
    rrr = Path(sys.executable).with_name("rrr")
    if not rrr.exists():
        pytest.skip("the rrr console script is not installed next to this Python")
    bad = write(tmp_path, "bad.rrr", "p = oracle(\"a\") ** oracle(\"b\")\n")
    clean = subprocess.run([str(rrr), "check", str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr
    failed = subprocess.run([str(rrr), "check", bad], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and f"{bad}:1:17: an exponent must be a number" in failed.stdout
