"""The notebook tour ``examples/tour.ipynb``: committed without outputs, and run end to end
headless (nbclient, a kernel on this interpreter) with small sample sizes."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

TOUR = Path(__file__).resolve().parent.parent / "examples" / "tour.ipynb"
#: $RRR_N_SCALE for the run: every sample of the tour becomes 50 draws or fewer (at least 16)
N_SCALE = "0.05"
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_the_committed_tour_has_no_outputs_and_reads_as_a_notebook() -> None:
    notebook = nbformat.read(TOUR, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert json.loads(TOUR.read_text())["cells"][0]["cell_type"] == "markdown"


def kernel_on_this_interpreter(folder: Path) -> KernelManager:
    """A kernel manager whose only kernel runs ``sys.executable -m ipykernel_launcher`` (not
    whatever ``python3`` kernel spec the machine has installed)."""
    spec = folder / "kernels" / "rrr-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "rrrdsl tests", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="rrr-test", kernel_spec_manager=specs)


def outputs_of(notebook: nbformat.NotebookNode, marker: str) -> list[dict]:
    """The outputs of the one code cell whose source is ``marker``, else contains it."""
    code = [c for c in notebook.cells if c.cell_type == "code"]
    (cell,) = [c for c in code if c.source.strip() == marker] or [c for c in code if marker in c.source]
    return cell.outputs


def mimetypes(outputs: list[dict]) -> set[str]:
    return {kind for output in outputs for kind in output.get("data", {})}


def text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs) + "".join(o.get("data", {}).get("text/plain", "") for o in outputs)


def test_the_tour_runs_end_to_end_in_a_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRR_N_SCALE", N_SCALE)  # the kernel inherits the environment
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the tour's scratch folder for its pictures
    # matplotlib's own font cache for the kernel: a user's cache that lost its fonts (a deleted
    # environment it was built from) makes findfont warn on stderr, which this test forbids
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    notebook = nbformat.read(TOUR, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    client = nbclient.NotebookClient(
        notebook, km=kernel_on_this_interpreter(tmp_path), timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError at the first cell that fails

    assert text(notebook.cells[-1].outputs).strip() == sys.executable
    assert "Traceback" not in json.dumps(notebook)
    assert not [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.get("name") == "stderr"]
    assert text(outputs_of(notebook, "# the 8-Gaussian ring")) == 'p = oracle("ring") * oracle("bar")\n'
    assert 'oracle("ring") ** 2 * oracle("bar") ** 2 / oracle("gauss")' in text(outputs_of(notebook, "%rrr p ** 2"))
    pictures = outputs_of(notebook, 'plot p -> "ring_bar.png"')
    assert sum("image/png" in o.get("data", {}) for o in pictures) == 3  # samples, diagnostics, annealing strip
    assert WIDGET in mimetypes(pictures)  # tqdm's notebook progress bar while sampling
    assert "<table>" in outputs_of(notebook, "p_diagnostics")[0]["data"]["text/html"]
    assert "image/png" in mimetypes(outputs_of(notebook, "reverse = rrrdsl.sample"))  # a SampleResult draws itself
    assert "image/png" in mimetypes(outputs_of(notebook, "cfg_result"))
    assert re.search(r"log Z: SMC -?\d+\.\d+, quadrature -?\d+\.\d+", text(outputs_of(notebook, "quadrature")))
    assert re.search(r"the evaluator reads \d+% of the samples as a 3", text(outputs_of(notebook, "evaluator.predict")))
