"""Every example runs, with a small N (``RRR_N_SCALE``), and writes the outputs it names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rrrdsl.run import RunOptions, run_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.rrr"))
PYTHON = sorted(EXAMPLES.glob("*.py"))
SMALL = 0.02  # 1000 samples -> 20


def test_examples_cover_the_language() -> None:
    text = "\n".join(path.read_text() for path in SCRIPTS)
    assert len(SCRIPTS) >= 8 and {p.name for p in PYTHON} == {"embedded_api.py", "custom_gmm.py"}
    for sampler in ("reverse", "ddim", "ula", "mala", "hmc", "uha", "nuts", "smc"):
        assert re.search(rf"using {sampler}\b", text), sampler
    constructs = [r" \* ", r" / ", r"\*\* -\d", r"\*\* \d", r"\) \+ \w", r"\d \* \w+\(.*\) \+ ", r"crop\(", r"model\(", r"oracle\(", r"gmm\(", r"box\("]
    for construct in constructs:
        assert re.search(construct, text), construct


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    assert run_file(script, RunOptions(out=tmp_path, quiet=True, n_scale=SMALL)) == 0
    for out in re.findall(r'-> "([^"]+)"', script.read_text()):
        assert (tmp_path / out).exists(), out


@pytest.mark.slow
@pytest.mark.parametrize("script", PYTHON, ids=lambda p: p.name)
def test_python_example_runs(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, "RRR_N_SCALE": str(SMALL)}
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and list(tmp_path.glob("*.png"))
