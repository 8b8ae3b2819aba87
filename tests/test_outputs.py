"""Outputs: confined to --out, never replacing another run's files, a sample's pair as one unit.

The fault-injection tests make the n-th file-system step of a write fail (a full disk) or be
interrupted (Ctrl-C), for every n, and check that the ``.npz``/``.json`` pair is never mixed:
either both are the old ones (or absent) or both are new; and that at *every* intermediate
state a ``.json`` that exists describes the ``.npz`` beside it (its SHA-256), which is what a
reader sees after a crash with no chance to undo.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from rrrdsl import files
from rrrdsl.cli import main
from rrrdsl.errors import InvalidValueError
from rrrdsl.files import output_path, read_limited, write_together

SCRIPT = 'p = oracle("ring")\nsample p using reverse n=8 seed=0 -> "s.npz"\n'


def pair(folder: Path, tag: str) -> dict[Path, bytes]:
    """A unit like a sample's: data, then a marker holding the data's hash."""
    data = f"data {tag}".encode()
    marker = json.dumps({"tag": tag, "npz_sha256": hashlib.sha256(data).hexdigest()}).encode()
    return {folder / "s.npz": data, folder / "s.json": marker}


def consistent(folder: Path) -> None:
    """A marker that exists describes the data beside it; no temporary file is left."""
    npz, marker = folder / "s.npz", folder / "s.json"
    if marker.exists():
        assert npz.exists() and hashlib.sha256(npz.read_bytes()).hexdigest() == json.loads(marker.read_text())["npz_sha256"]


def tag(folder: Path) -> tuple:
    """Which unit is in place: the marker's tag and the data's, None when absent."""
    npz, marker = folder / "s.npz", folder / "s.json"
    return (
        npz.read_bytes().decode().split()[1] if npz.exists() else None,
        json.loads(marker.read_text())["tag"] if marker.exists() else None,
    )


def count_steps(monkeypatch: pytest.MonkeyPatch, folder: Path) -> int:
    """File-system steps of one write_together (renames and syncs), replayed on a scratch copy."""
    calls = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(files.os, "replace", lambda *a: (calls.append(1), real_replace(*a))[1])
    monkeypatch.setattr(files.os, "fsync", lambda *a: (calls.append(1), real_fsync(*a))[1])
    scratch = folder / "scratch"
    scratch.mkdir()
    write_together(pair(scratch, "old"))
    calls.clear()
    write_together(pair(scratch, "new"))
    monkeypatch.undo()
    return len(calls)


@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("existing", [True, False])
def test_a_fault_at_any_step_leaves_the_old_pair_or_the_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: BaseException, existing: bool) -> None:
    steps = count_steps(monkeypatch, tmp_path)
    assert steps >= 4  # two syncs, two renames at least
    for k in range(steps):
        folder = tmp_path / f"{k}"
        folder.mkdir()
        if existing:
            write_together(pair(folder, "old"))
        calls = []
        real_replace, real_fsync = os.replace, os.fsync

        def step(real, *args):
            calls.append(1)
            consistent(folder)
            if len(calls) == k + 1:
                raise fault
            return real(*args)

        monkeypatch.setattr(files.os, "replace", lambda *a: step(real_replace, *a))
        monkeypatch.setattr(files.os, "fsync", lambda *a: step(real_fsync, *a))
        try:
            write_together(pair(folder, "new"))
        except type(fault):
            pass
        monkeypatch.undo()
        if len(calls) <= k:  # fewer steps without an old pair: the write went through
            assert not existing and tag(folder) == ("new", "new")
            break
        assert tag(folder) == (("old", "old") if existing else (None, None)), k
        assert sorted(p.name for p in folder.iterdir()) == (["s.json", "s.npz"] if existing else [])


def test_every_intermediate_state_is_consistent_for_a_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_together(pair(tmp_path, "old"))
    real_replace = os.replace
    seen = []

    def replace(*args):
        real_replace(*args)
        consistent(tmp_path)  # what a crash right here would leave
        seen.append(tag(tmp_path))

    monkeypatch.setattr(files.os, "replace", replace)
    write_together(pair(tmp_path, "new"))
    assert seen[-1] == ("new", "new") and ("old", "old") not in seen[1:]


def test_output_paths_stay_inside_the_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "file").write_text("")
    (tmp_path / "dir.npz").mkdir()
    os.symlink(tmp_path.parent, tmp_path / "link")
    assert output_path(tmp_path, "sub/x.npz", ".npz") == tmp_path / "sub" / "x.npz"
    assert output_path(tmp_path, "new/deeper/x.npz", ".npz") == tmp_path / "new" / "deeper" / "x.npz"
    bad = {
        "../x.npz": "leaves the output folder",
        "sub/../../x.npz": "leaves the output folder",
        "/tmp/x.npz": "leaves the output folder",
        "link/x.npz": "symbolic link",
        "file/x.npz": "which is a file",
        "dir.npz": "existing folder",
        "x\0y.npz": "character '\\x00'",
        "x\\y.npz": "character '\\\\'",
        "x\ny.npz": "character '\\n'",
        "a" * 252 + ".npz": "longer than 255 bytes",
        "/".join(["a" * 200] * 6) + ".npz": "longer than 1024 bytes",
        "x.png": "must be a file name ending with .npz",
        ".npz": "must be a file name ending with .npz",
        "sub/": "must be a file name ending with .npz",
    }
    for name, message in bad.items():
        with pytest.raises(InvalidValueError, match=None) as error:
            output_path(tmp_path, name, ".npz")
        assert message in error.value.message, (name, error.value.message)


def test_read_limited_stops_at_the_limit(tmp_path: Path) -> None:
    assert read_limited(os.devnull, 10) == b""
    with pytest.raises(InvalidValueError, match="larger than 1,000 bytes"):
        read_limited("/dev/zero", 1000)


def run(tmp_path: Path, text: str, *flags: str) -> int:
    script = tmp_path / "s.rrr"
    script.write_text(text)
    return main(["run", str(script), "--out", str(tmp_path / "out"), "--quiet", *flags])


def test_a_run_never_replaces_a_file_it_did_not_write_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "s.json").write_text("settings")  # an unrelated file beside the sample's name
    assert run(tmp_path, SCRIPT) == 1
    assert "out/s.json already exists and this run did not write it" in capsys.readouterr().err
    assert (out / "s.json").read_text() == "settings" and not (out / "s.npz").exists()
    assert run(tmp_path, SCRIPT, "--force") == 0
    meta = json.loads((out / "s.json").read_text())
    assert meta["npz_sha256"] == hashlib.sha256((out / "s.npz").read_bytes()).hexdigest()


def test_two_statements_writing_one_file_is_a_check_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = SCRIPT + 'sample p using ddim n=8 -> "s.npz"\nplot p -> "q.png"\nplot p -> "q-annealing.png"\n'
    assert run(tmp_path, text) == 1
    err = capsys.readouterr().err
    assert "s.rrr:3:28: " in err and "s.npz is also written by the statement on line 2" in err
    assert "s.rrr:5:11: " in err and "q-annealing.png is also written by the statement on line 4" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_run_that_fails_writing_the_json_leaves_no_npz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fault: BaseException) -> None:
    real_replace = os.replace

    def replace(source, destination):
        if str(destination).endswith(".json"):
            raise fault
        return real_replace(source, destination)

    monkeypatch.setattr(files.os, "replace", replace)
    assert run(tmp_path, SCRIPT) == (1 if isinstance(fault, OSError) else 130)
    err = capsys.readouterr().err
    assert ("No space left on device" in err) if isinstance(fault, OSError) else ("no partial file was written" in err)
    assert list((tmp_path / "out").iterdir()) == []


def test_non_finite_samples_exit_1_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = 'sample box(low=[-1e300, 0], high=[1, 1]) using reverse(eta=1) n=20 -> "nan.npz"\n'
    assert run(tmp_path, text) == 1
    captured = capsys.readouterr()
    assert "NON-FINITE 20/20 rows" in captured.out and "20 of 20 samples" in captured.err
    assert json.loads((tmp_path / "out" / "nan.json").read_text())["nonfinite_rows"] == 20
    assert not np.isfinite(np.load(tmp_path / "out" / "nan.npz")["x"]).all(axis=1).any()
    allowed = text.replace("eta=1)", "eta=1, allow_nonfinite=true)")
    assert run(tmp_path, allowed, "--force") == 0
    assert "NON-FINITE 20/20 rows (allowed)" in capsys.readouterr().out
