"""The Hilbert-curve order of systematic resampling (``rrrdsl.samplers.ordering``): the curve, the
order, and what it buys: each well-separated mode gets its weight's share of children within one."""

import itertools

import pytest
import torch

from rrrdsl.errors import SamplerError
from rrrdsl.samplers.distributed import Group
from rrrdsl.samplers.ordering import hilbert_index, hilbert_order


@pytest.mark.parametrize("d, bits", [(1, 5), (2, 4), (3, 2), (4, 2), (5, 2)])
def test_the_hilbert_index_numbers_every_cell_once_and_steps_to_a_neighbour(d, bits):
    cells = torch.tensor(list(itertools.product(range(1 << bits), repeat=d)))
    index = hilbert_index(cells, bits)
    assert sorted(index.tolist()) == list(range(1 << (d * bits)))
    walk = cells[torch.argsort(index)]
    assert ((walk[1:] - walk[:-1]).abs().sum(dim=1) == 1).all()  # a continuous curve through the grid
    assert walk[0].tolist() == [0] * d


def test_a_hilbert_index_too_long_for_an_int64_is_refused():
    with pytest.raises(ValueError, match="int64"):
        hilbert_index(torch.zeros(1, 8, dtype=torch.int64), 8)


def test_the_order_is_a_permutation_unchanged_by_shifting_and_scaling_with_nonfinite_rows_last():
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    order = hilbert_order(x)
    assert sorted(order.tolist()) == list(range(500))
    assert torch.equal(order, hilbert_order(x * torch.tensor([3.0, 0.5]) + torch.tensor([10.0, -4.0])))
    x[[7, 3]] = torch.tensor([[float("nan"), 0.0], [float("inf"), 1.0]])
    assert hilbert_order(x)[-2:].tolist() == [3, 7]
    assert hilbert_order(x[:1]).tolist() == [0] and hilbert_order(x[:0]).tolist() == []
    assert torch.equal(hilbert_order(x[:, :1]), torch.cat([torch.argsort(x[:, 0])[:-2], torch.tensor([3, 7])]))


def _clusters(d: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points around 3 well-separated centres in ``d`` dimensions, in a random storage order."""
    generator = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(3, d, generator=generator)
    label = torch.randint(3, (n,), generator=generator)
    return centres[label] + 0.05 * torch.randn(n, d, generator=generator), label


@pytest.mark.parametrize("d", [2, 3, 50])
def test_separated_clusters_come_out_contiguous(d):
    x, label = _clusters(d, 600, seed=d)
    runs = torch.unique_consecutive(label[hilbert_order(x)])
    assert len(runs) == 3  # one run per cluster, also through the leading components (d > 4)


def _mode_counts(label: torch.Tensor, log_w: torch.Tensor, order, seed: int) -> torch.Tensor:
    children = Group().resample(log_w, torch.Generator().manual_seed(seed), order).order
    return torch.bincount(label[children], minlength=3).to(torch.float64)


def test_hilbert_ordered_resampling_gives_each_mode_its_share_within_one():
    x, label = _clusters(2, 300, seed=1)
    log_w = torch.randn(300, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    w = torch.softmax(log_w, 0)
    expected = 300 * torch.zeros(3, dtype=torch.float64).index_add_(0, label, w)
    ordered = torch.stack([_mode_counts(label, log_w, hilbert_order(x), s) for s in range(200)])
    assert ((ordered - expected).abs() < 1 + 1e-9).all()
    stored = torch.stack([_mode_counts(label, log_w, None, s) for s in range(200)])
    assert ((stored - expected).abs() >= 2).any()  # in storage order the modes' counts scatter


def test_hilbert_ordered_resampling_is_unbiased():
    x, label = _clusters(2, 40, seed=3)
    log_w = torch.randn(40, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    runs = 4000
    counts = torch.stack([
        torch.bincount(Group().resample(log_w, torch.Generator().manual_seed(s), hilbert_order(x)).order, minlength=40)
        for s in range(runs)
    ]).to(torch.float64)
    expected = 40 * torch.softmax(log_w, 0)
    # a count is floor or ceil of N w_i: its sd is at most 1/2, so the mean's is at most 1/(2 sqrt(runs))
    assert ((counts.mean(0) - expected).abs() <= 4 / (2 * runs**0.5)).all()


def test_resampling_is_an_option_of_smc_checked_before_any_work():
    from rrrdsl import oracle, sample

    target = oracle("ring")
    for resampling in ("hilbert", "systematic"):
        assert sample(target, "smc", n=64, seed=0, budget=60, progress=False, resampling=resampling).diagnostics["options"]["resampling"] == resampling
    with pytest.raises(SamplerError, match="(?s)resampling.*did you mean 'hilbert'"):
        sample(target, "smc", n=64, resampling="hilbrt")


def test_the_table_of_a_large_population_gives_the_order_computed_per_particle(monkeypatch):
    from rrrdsl.samplers import ordering

    x = torch.randn(3000, 2, generator=torch.Generator().manual_seed(5))
    direct = hilbert_order(x)
    monkeypatch.setattr(ordering, "TABLE_FROM", 1000)
    assert torch.equal(hilbert_order(x), direct)
    x3 = torch.randn(3000, 3, generator=torch.Generator().manual_seed(6))
    tabled = hilbert_order(x3)
    monkeypatch.setattr(ordering, "TABLE_FROM", 1 << 40)
    assert torch.equal(hilbert_order(x3), tabled)
