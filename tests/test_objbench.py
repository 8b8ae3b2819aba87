"""``rrr bench objects`` and the objects judge: the composition of k cells, the quick benchmark at
equal NFE, the detector's verdicts in ``rrr run``'s summary (the examples), the judge hook.

The models are tiny random ``UNet2DModel`` networks registered as ``model("objects", cell=c)`` and
its score twin (the shipped ones are trained; these only have to run), so every number here
checks plumbing, not accuracy; the detector is the family's own, on images from its generator.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from rrrdsl.bench import objects as bench  # noqa: E402
from rrrdsl.cli import main as rrr  # noqa: E402
from rrrdsl.errors import InvalidValueError  # noqa: E402
from rrrdsl.lang.ir import Leaf, Power, Product, model  # noqa: E402
from rrrdsl.models import registry  # noqa: E402
from rrrdsl.run import RunOptions, run_file  # noqa: E402
from rrrdsl.zoo.diffusers.adapter import DiffusersBackbone, leaf_factory  # noqa: E402
from rrrdsl.zoo.diffusers.conditions import Labels  # noqa: E402
from rrrdsl.zoo.diffusers.modules import linear_alphas_cumprod  # noqa: E402
from rrrdsl.zoo.diffusers.schedule import native_schedule  # noqa: E402
from rrrdsl.zoo.objects import judge  # noqa: E402
from rrrdsl.zoo.objects.data import scenes  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "objects"
LEVELS = 6


def tiny_unet() -> torch.nn.Module:
    """A random class-conditional UNet2DModel on 16x16 images (16 cells + the null slot)."""
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, num_class_embeds=17,
    ).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def networks() -> dict[str, DiffusersBackbone]:
    native = native_schedule(linear_alphas_cumprod(), 8)  # the bench samples on LEVELS of its ᾱ (retimed)
    cells = Labels(17, 16, "cell")
    return {name: DiffusersBackbone(tiny_unet(), native, (1, 16, 16), "epsilon", energy, cells) for name, energy in (("objects", "norm"), ("objects_score", None))}


@pytest.fixture
def tiny(networks, monkeypatch) -> None:
    """``model("objects", cell=c)`` and ``model("objects_score", cell=c)`` on the tiny networks;
    the zoo's other names and the judges stay."""
    registry.load_zoo()
    monkeypatch.setattr(registry, "_REGISTERED", {kind: dict(table) for kind, table in registry._REGISTERED.items()})
    monkeypatch.setattr(registry, "_CACHE", {})
    for name, backbone in networks.items():
        registry.register_model(name, leaf_factory(name, lambda backbone=backbone: backbone))


def test_a_composition_of_k_cells_is_the_product_over_the_null_model_to_the_k_minus_1():
    three = bench.composition([1, 5, 9])
    assert three == model("objects", cell=1) * model("objects", cell=5) * model("objects", cell=9) / model("objects") ** 2
    assert isinstance(three, Product) and Power(model("objects"), -2.0) in three.terms and len(three.terms) == 4
    assert bench.composition([7], "objects_score") == model("objects_score", cell=7) and isinstance(bench.composition([7]), Leaf)


@pytest.mark.parametrize("cells, message", [
    ([], "needs 1 to 16 cells, got 0"), (list(range(17)), "needs 1 to 16 cells, got 17"), ([3, 4, 3], "cell 3 is requested twice"),
    ([16], "a cell is an integer 0..15, got 16"), ([True], "got True"), ([2.0], "got 2.0"),
])
def test_bad_cell_lists_are_refused_before_any_model_is_resolved(cells, message, monkeypatch):
    monkeypatch.setattr(registry, "resolve", lambda *args: pytest.fail("resolved a model"))
    with pytest.raises(InvalidValueError, match=re.escape(message)):
        bench.composition(cells)


def test_cell_sets_are_fixed_distinct_and_sorted():
    sets = bench.cell_sets(3, 4)
    assert sets == bench.cell_sets(3, 4) and len(set(sets)) == 4
    assert all(len(set(s)) == 3 and list(s) == sorted(s) for s in sets)
    assert bench.cell_sets(16, 1) == [tuple(range(16))]
    with pytest.raises(InvalidValueError, match="only 1 sets of 16 cells"):
        bench.cell_sets(16, 2)


def test_the_quick_benchmark_writes_both_tables_the_claims_and_the_grids(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "QUICK", bench.QUICK._replace(n=2, ks=(3,), levels=LEVELS))  # every sampler at equal NFE, both tables
    assert rrr(["bench", "objects", "--quick", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "objects.md").read_text()
    assert "`rrr bench objects --quick" in report and "NFE/sample" in report
    for label in ("reverse", r"reverse \(score\)", "ULA", "MALA", "HMC", "SMC", "MALA-LI", "HMC-LI"):
        assert re.search(rf"^\| {label} \| 3 \| {LEVELS * 3} \| \d\.\d{{3}} ± \d\.\d{{3}} \|", report, re.M), label
    assert re.search(r"^\| MALA-LI \| 3 \| reverse \(score\) \| [+-]\d\.\d{3} ± \d\.\d{3} \| (yes|no) \|$", report, re.M)
    assert re.search(rf"^\| 3 \| reverse \| 0 \| {LEVELS - 1} \|", report, re.M) and re.search(rf"^\| 3 \| ULA \| 2 \| {LEVELS * 3} \|", report, re.M)
    assert re.search(r"^\| 3 \| MALA \| [+-]\d\.\d{3} ± \d\.\d{3} \| (yes|no) \| .+ \|$", report, re.M)
    assert (tmp_path / "objects-k3.png").stat().st_size > 1000


def test_the_judge_reads_requested_and_negated_cells_from_the_graph():
    assert judge.requested(bench.composition([1, 5, 9])) == judge.Requested((1, 5, 9), ())
    negation = model("objects", cell=2) * model("objects", cell=6) / model("objects") / model("objects", cell=3) ** 0.5
    assert judge.requested(negation) == judge.Requested((2, 6), (3,))
    assert judge.requested(model("objects", cell=4) ** 2 / model("objects_score", cell=4) ** 3) == judge.Requested((), (4,))
    assert judge.requested(model("objects", cell=1) + model("objects", cell=2)) is None
    assert judge.requested(model("objects")) == judge.Requested((), ())


def test_the_judge_counts_objects_with_the_detector():
    images, occupancy = scenes(64, seed=3)
    x = images.reshape(64, 256)
    assert torch.equal(judge.all_present(x, [0, 5]), occupancy[:, [0, 5]].all(dim=1))
    (line,) = judge.judge(model("objects", cell=0) * model("objects", cell=5) / model("objects") / model("objects", cell=3) ** 0.5, x)
    fractions = [float(occupancy[:, 0].float().mean()), float(occupancy[:, 5].float().mean()), float((~occupancy[:, 3]).float().mean()),
                 float(occupancy[:, [0, 5]].all(dim=1).float().mean())]
    assert line == (f"objects detector: cell 0 (row 0, column 0) has an object in {fractions[0]:.2f}; cell 5 (row 1, column 1) has an object in "
                    f"{fractions[1]:.2f}; cell 3 (row 0, column 3) (negated) is empty in {fractions[2]:.2f}; all 2 requested cells in {fractions[3]:.2f} of 64 samples")
    assert judge.judge(model("objects"), x) == []


@pytest.mark.parametrize("script", ["three.rrr", "negation.rrr"])
def test_the_examples_print_the_detectors_verdicts_in_the_summary(script, tiny, tmp_path, capsys):
    assert run_file(EXAMPLES / script, RunOptions(out=tmp_path, quiet=True, n_scale=0.05)) == 0
    summary = capsys.readouterr().out
    verdicts = re.findall(r"^  objects detector: (.*)$", summary, re.M)
    assert len(verdicts) == summary.count("\nsample ") + summary.startswith("sample ") >= 2
    assert all("has an object in" in v for v in verdicts)
    if script == "negation.rrr":
        assert all("(negated) is empty in" in v for v in verdicts)
