"""SMC's adaptive levels: the conditional ESS, the bisection, the walk's budget and its options."""

import math

import pytest
import torch

import rrrdsl
from rrrdsl.bench import exact_checks
from rrrdsl.errors import SamplerError
from rrrdsl.samplers.base import StepInfo
from rrrdsl.samplers.langevin import ULAState
from rrrdsl.samplers.levels import BUDGET, PILOT_POWERS, next_level, pilot_step_size
from rrrdsl.samplers.smc import conditional_ess
from rrrdsl.schedules import cosine, default


def test_conditional_ess_known_values():
    equal = torch.zeros(4, dtype=torch.float64)
    # a constant increment keeps every particle: CESS = N
    assert conditional_ess(equal, torch.full((4,), -3.0, dtype=torch.float64)) == pytest.approx(1.0)
    # half the particles killed under equal weights: (1/2)^2 / (1/2) = 1/2
    half = torch.tensor([0.0, 0.0, -math.inf, -math.inf], dtype=torch.float64)
    assert conditional_ess(equal, half) == pytest.approx(0.5)
    # v = (1, 2) under W = (3/4, 1/4): (3/4 + 2/4)^2 / (3/4 + 4/4) = 25/28
    log_w = torch.log(torch.tensor([3.0, 1.0], dtype=torch.float64))
    assert conditional_ess(log_w, torch.log(torch.tensor([1.0, 2.0], dtype=torch.float64))) == pytest.approx(25 / 28)
    # every W v vanishes
    assert conditional_ess(equal, torch.full((4,), -math.inf, dtype=torch.float64)) == 0.0


def test_conditional_ess_of_a_gaussian_shift():
    """Exact draws x ~ N(0, 1) reweighted to N(m, 1): CESS/N -> exp(-m^2) as N grows."""
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = 0.7
    increment = m * x - m**2 / 2
    assert conditional_ess(torch.zeros_like(x), increment) == pytest.approx(math.exp(-(m**2)), rel=0.02)


@pytest.mark.parametrize("jump", [None, 1, 20, 62, 99])
@pytest.mark.parametrize("answer", [0, 1, 37, 98])
def test_next_level_finds_the_lowest_acceptable_level(answer: int, jump):
    probed = []

    def acceptable(s: int) -> bool:
        probed.append(s)
        return s >= answer

    level, probes = next_level(99, acceptable, jump=jump)
    assert level == answer and probes == len(probed)
    assert probes <= 2 * (1 + math.ceil(math.log2(99)))  # exponential search, then bisection
    if jump == 99 - answer and answer > 0:
        assert probes == 2  # the previous jump again: the guess and the level below it
    assert next_level(99, acceptable, lowest=50, jump=jump)[0] == max(answer, 50)


def test_next_level_takes_the_nearest_level_when_none_is_acceptable():
    assert next_level(10, lambda s: False)[0] == 9
    assert next_level(10, lambda s: False, jump=3)[0] == 9
    assert next_level(1, lambda s: False) == (0, 1)
    with pytest.raises(ValueError):
        next_level(0, lambda s: True)


def ring_bar():
    return rrrdsl.oracle("ring") * rrrdsl.oracle("bar")


def test_the_default_walk_skips_levels_within_its_budget_and_stops_at_snapshots():
    result = rrrdsl.sample(ring_bar(), n=200, seed=0, snapshots=(50, 7), progress=False)
    levels = result.diagnostics["levels"]
    visited = (levels.nfe > 0).nonzero().flatten().tolist()
    assert result.diagnostics["nfe"] == pytest.approx(BUDGET, abs=8)  # up to one step's cost short
    assert 50 in visited and 7 in visited and 0 in visited and 99 in visited
    assert len(visited) < 30  # adaptive: far fewer than the 100 levels of the schedule
    assert set(result.diagnostics["snapshots"]) == {50, 7}
    assert levels.resampled[0] == 1  # the returned particles are an unweighted sample
    assert torch.isfinite(torch.tensor(result.diagnostics["log_z"]))


def test_the_walk_runs_on_a_short_schedule():
    target = rrrdsl.compile(ring_bar(), cosine(10))
    result = rrrdsl.sample(target, n=50, seed=1, steps=2, budget=100, progress=False)
    assert 90 <= result.diagnostics["nfe"] <= 100 and torch.isfinite(result.x).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"reverse": None}, "option 'reverse' belongs to the fixed walk"),
        ({"reverse_levels": (0, 5)}, "option 'reverse_levels' belongs to the fixed walk"),
        ({"kernel": None}, "needs an MCMC move"),
        ({"levels": "schedule", "budget": 100}, "option 'budget' belongs to the adaptive walk"),
        ({"levels": "adaptiv"}, "option 'levels' must be one of 'adaptive' or 'schedule'"),
        ({"ess": 1.0}, r"option 'ess' must be a number in \(0, 1\)"),
        ({"budget": 0}, "option 'budget' must be an integer >= 1"),
        ({"levels": "schedule", "oversample": 2}, "option 'oversample' belongs to the adaptive walk"),
        ({"oversample": 0}, "option 'oversample' must be an integer >= 1"),
    ],
)
def test_walk_options_are_checked_before_any_work(options, message):
    with pytest.raises(SamplerError, match=message):
        rrrdsl.sample(ring_bar(), "smc", n=4, progress=False, **options)


class _StubKernel:
    """A kernel whose acceptance probability is ``exp(-step_size)`` on every chain (a float or
    per-chain step sizes), 1 NFE a step."""

    def step(self, state, target, t, step_size, generator):
        ones = torch.ones(state.x.shape[0], dtype=torch.float64)
        info = StepInfo(ones * torch.exp(-torch.as_tensor(step_size, dtype=torch.float64)), ones > 0, ones < 0, ones)
        return state, info


def test_the_pilot_keeps_the_largest_step_size_that_reaches_the_target_acceptance():
    state = ULAState(torch.zeros(1000, 2), torch.zeros(1000, 2))
    generator = torch.Generator().manual_seed(0)
    # exp(-s) >= 0.5 for s <= 0.69: of 2^-4 .. 2^4 the largest is 0.5
    step_size, cost = pilot_step_size(_StubKernel(), None, state, 0, 1.0, 0.5, generator)
    assert step_size == 0.5
    assert cost == pytest.approx(len(PILOT_POWERS) * 125 / 1000)  # 9 steps of N / 8 chains
    # none reaches acceptance 0.99: the smallest candidate
    assert pilot_step_size(_StubKernel(), None, state, 0, 1.0, 0.99, generator)[0] == 2.0**-4


def test_thinning_keeps_every_ancestor_in_proportion_whatever_the_offset():
    # a resampled walk's rows in ancestor order, three children each: every m-th row keeps each ancestor once
    from rrrdsl.samplers.levels import thin
    from rrrdsl.samplers.smc import SMCWeights

    ancestors = torch.arange(40).repeat_interleave(3).to(torch.float64).unsqueeze(1)
    for seed in range(6):
        weights = SMCWeights(default(), 120)
        weights.log_w = torch.full((120,), -1.5, dtype=torch.float64)  # equal, as after a resampling
        before = weights.log_z()
        x, snapshots = thin(ancestors, {2: ancestors + 0.5}, 3, weights, torch.Generator().manual_seed(seed))
        assert x[:, 0].tolist() == list(range(40)) and (snapshots[2] == x + 0.5).all()
        assert weights.n == 40 and weights.log_w.shape == (40,) and weights.log_z() == pytest.approx(before, abs=1e-12)


def test_a_walk_keeps_its_budget_and_moves_at_level_0_when_it_needs_many_levels():
    """``gmm(std=0.1) * gmm(std=0.2)`` in 10 dimensions takes about 27 levels: the oversampled
    walk thins before level 0 and cuts its moves per level, so it keeps the 600-gradient budget
    and still moves its particles at level 0 (before: 992 gradients, 8 of them at level 0, the
    returned particles the copies of the last resampling). A short walk keeps about a quarter of
    the budget (``RESERVE``) or more for level 0 as well."""
    long_walk = rrrdsl.gmm(means=[[0.5] * 10], std=0.1) * rrrdsl.gmm(means=[[-0.3] * 10], std=0.2)
    for options in ({}, {"oversample": 1, "steps": 16}):
        result = rrrdsl.sample(long_walk, n=200, seed=0, progress=False, **options)
        levels = result.diagnostics["levels"]
        assert result.diagnostics["nfe"] <= 600 and float(levels.nfe[0]) >= 50, (options, float(levels.nfe[0]))
        assert torch.unique(result.x, dim=0).shape[0] == 200  # moved after the last resampling: no copies
    short_walk = rrrdsl.sample(ring_bar(), n=200, seed=0, progress=False)
    assert short_walk.diagnostics["nfe"] <= 600 and float(short_walk.diagnostics["levels"].nfe[0]) >= 140


def test_an_oversampled_walk_returns_n_particles_within_the_budget_and_an_unbiased_log_z():
    """log Z over 40 runs of N = 32 (64 particles in the walk). Not smaller: the adaptive walk
    chooses its levels and step sizes on the particles it weights, which biases Ẑ by O(1/N)
    (measured on this target, 800 runs: Ẑ/Z about 1.03 with 16 particles, 1.004 with 64)."""
    target = rrrdsl.compile(ring_bar(), cosine(10))
    result = rrrdsl.sample(target, n=50, seed=1, steps=2, budget=100, oversample=2, progress=False)
    assert result.x.shape == (50, 2) and 90 <= result.diagnostics["nfe"] <= 100
    ratios = exact_checks.z_ratios("gaussian product", 32, 40, kernel="mala", oversample=2, **exact_checks.ADAPTIVE)
    ok, summary = exact_checks.within_three_standard_errors(ratios, 1.0)
    assert ok, summary
