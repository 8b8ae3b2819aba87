"""``rrr run``: outputs, checks before sampling, seeds, N scaling, interruption, --device cuda."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rrrdsl.cli import main

ROOT = Path(__file__).resolve().parents[1]
# a cheap composition: exact oracles, MCMC at the last two levels only
SCRIPT = """\
p = gmm(means=[[-0.5, 0], [0.5, 0]], std=0.1) * box(low=[-1, -0.5], high=[0, 0.5])
show p
sample p using reverse n=40 seed=0 -> "rev.npz"
sample p using mala(steps=3, mcmc_levels=[0, 1]) n=40 seed=0 -> "mala.npz"
plot p -> "p.png"
"""


def write(tmp_path: Path, text: str, name: str = "s.rrr") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_run_writes_samples_diagnostics_plots_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["run", write(tmp_path, SCRIPT), "--out", str(out), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert 'p = gmm(means=[[-0.5, 0], [0.5, 0]], std=0.1) * box(low=[-1, -0.5], high=[0, 0.5])' in stdout
    x = np.load(out / "mala.npz")["x"]
    assert x.shape == (40, 2) and np.isfinite(x).all()
    meta = json.loads((out / "mala.json").read_text())
    assert meta["sampler"] == "mala" and meta["n"] == 40 and meta["line"] == 4
    assert len(meta["levels"]["accept_mean"]) == 100
    with np.load(out / "rev.npz") as rev:
        assert rev["snapshots"].shape[1:] == (40, 2) and rev["snapshot_levels"][-1] == 0
    for name in ("p.png", "p-diagnostics.png", "p-annealing.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sample p (line 4): mala, N=40, NFE/particle" in stdout and "acceptance" in stdout
    assert str(out / "mala.npz") in stdout
    assert not list(out.glob(".*tmp"))


def test_every_error_is_found_before_any_sampling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = SCRIPT + (
        'sample p using mala(stepsize=0.1) n=10\n'
        'q = oracle("ring") * gmm(means=[[0]], std=1)\n'
        "sample q using nust\n"
    )
    out = tmp_path / "out"
    path = write(tmp_path, script)
    assert main(["run", path, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:6:21: unknown option 'stepsize' for sampler 'mala'" in err and "did you mean 'step_size'" in err
    assert "    sample p using mala(stepsize=0.1) n=10\n" + " " * 24 + "^" in err  # at the option
    assert f"{path}:8:1: " in err and "dim" in err  # the shape error of q, at its sample
    assert "2 errors: nothing was run" in err
    assert not out.exists()  # line 3's sample never ran


def test_syntax_errors_are_reported_with_a_caret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'p = oracle("ring") *\nsample oracle("ring") using mala n=0\n')
    assert main(["run", path, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert f"{path}:1:" in err and f"{path}:2:" in err and "^" in err


def sample_x(tmp_path: Path, name: str, script: str, *flags: str) -> np.ndarray:
    out = tmp_path / name
    assert main(["run", write(tmp_path, script, f"{name}.rrr"), "--out", str(out), "--quiet", *flags]) == 0
    return np.load(out / "x.npz")["x"]


def test_seed_offsets_the_statement_seeds_and_n_scale_scales_n(tmp_path: Path) -> None:
    line = 'sample gmm(means=[[0, 0]], std=0.5) using ula(steps=2, mcmc_levels=[0, 0]) n=100 seed={} -> "x.npz"\n'
    base = sample_x(tmp_path, "a", line.format(1))
    assert np.array_equal(base, sample_x(tmp_path, "b", line.format(1)))  # fixed seed, same output
    assert np.array_equal(base, sample_x(tmp_path, "c", line.format(0), "--seed", "1"))  # offset 1 + seed 0
    assert not np.array_equal(base, sample_x(tmp_path, "d", line.format(1), "--seed", "1"))
    assert sample_x(tmp_path, "e", line.format(1), "--n-scale", "0.1").shape == (10, 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_device_cuda_without_cuda_is_a_clear_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", write(tmp_path, SCRIPT), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: CUDA is not available" in err and "use --device cpu" in err
    assert not (tmp_path / "o").exists()


def test_unreadable_script_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "missing.rrr")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_ctrl_c_stops_cleanly_without_a_partial_file(tmp_path: Path) -> None:
    """SIGINT during the second (long) sample: exit 130, a message, the first sample's files
    complete, nothing of the second, no temporary file."""
    script = (
        'p = oracle("ring") * oracle("bar")\n'
        'sample p using reverse n=20 seed=0 -> "done.npz"\n'
        'sample p using mala(steps=2000) n=2000 seed=0 -> "long.npz"\n'
    )
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # a shell's background job (`make test &`, nohup) starts with SIGINT ignored, and python then
    # installs no KeyboardInterrupt handler: the child installs it itself, as in a terminal
    child = "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); from rrrdsl.cli import main; sys.exit(main())"
    process = subprocess.Popen(
        [sys.executable, "-c", child, "run", write(tmp_path, script), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    deadline = time.monotonic() + 60
    while not (out / "done.json").exists():  # the first sample is written: the long one runs
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted at line 3" in stderr and "no partial file" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["done.json", "done.npz"]
    assert np.load(out / "done.npz")["x"].shape == (20, 2)
    assert "sample p (line 2): reverse" in stdout


def test_the_summary_prints_the_verdicts_of_the_judges_of_the_sampled_models(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from rrrdsl.models import registry

    monkeypatch.setattr(registry, "_JUDGES", {})
    registry.register_judge("ring", lambda expr, x: [f"ring judge: {len(x)} samples of {expr}"])
    script = write(tmp_path, 'p = model("ring") * model("bar")\nsample p using reverse n=5 seed=0\nsample oracle("ring") using reverse n=3 seed=0\n')
    assert main(["run", script, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sample p (line 2): reverse, N=5") and lines[1] == '  ring judge: 5 samples of model("ring") * model("bar")'
    assert lines[2].startswith('sample oracle("ring") (line 3)') and len(lines) == 3
