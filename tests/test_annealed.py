"""The annealed driver: product bias fixed by MCMC, level sets, adaptation, divergences, snapshots."""

import math

import pytest
import torch

import rrrdsl
from rrrdsl.bench.common import ring_centers
from rrrdsl.samplers.annealed import AnnealedConfig, StepSums, anneal, in_level_set
from rrrdsl.samplers.base import StepInfo
from rrrdsl.samplers.langevin import MALA, ULA

MODES = torch.tensor([[0.0, 0.5], [0.0, -0.5]])  # where oracle("ring") * oracle("bar") puts its mass
RADIUS = 0.1


def ring_bar():
    return rrrdsl.oracle("ring") * rrrdsl.oracle("bar")


def mass_near_modes(x: torch.Tensor) -> float:
    return float(rrrdsl.metrics.mode_weights(x, MODES, RADIUS).sum())


@pytest.mark.slow
def test_mcmc_at_every_level_fixes_the_product_bias_of_reverse_diffusion():
    n = 500
    exact = mass_near_modes(rrrdsl.truth.exact_samples(ring_bar(), 4000, seed=0))
    reverse = mass_near_modes(rrrdsl.sample(ring_bar(), "reverse", n=n, seed=0, progress=False).x)
    every_level = dict(mcmc_levels=None, steps=8, progress=False)
    mala = mass_near_modes(rrrdsl.sample(ring_bar(), "mala", n=n, seed=0, **every_level).x)
    standard_error = math.sqrt(exact * (1 - exact) / n)
    # reverse diffusion with summed scores misses the modes by many standard errors ...
    assert exact - reverse > 20 * standard_error
    # ... and annealed MALA at every level removes most of that bias
    assert abs(exact - mala) < 0.5 * (exact - reverse)


def test_reverse_diffusion_over_guides_and_annealed_mala_does_not():
    """``ring_left ** 3 / ring ** 2`` (classifier-free-guidance shaped) keeps its four modes
    equal; reverse diffusion with summed scores moves mass to the two modes inside the guided
    arc (the direction of the digits guidance results, benchmarks/results/digits-findings.md),
    annealed MALA keeps the exact weights."""
    n = 1000
    expr = rrrdsl.oracle("ring_left") ** 3 / rrrdsl.oracle("ring") ** 2
    centres = ring_centers()[:4]

    def inner_share(x: torch.Tensor) -> float:
        weights = rrrdsl.metrics.mode_weights(x, centres, RADIUS)
        return float(weights[1:3].sum() / weights.sum())

    exact = inner_share(rrrdsl.truth.exact_samples(expr, 4000, seed=0))
    reverse = inner_share(rrrdsl.sample(expr, "reverse", n=n, seed=0, progress=False).x)
    mala = inner_share(rrrdsl.sample(expr, "mala", n=n, seed=0, progress=False).x)
    standard_error = math.sqrt(0.25 / n)
    assert abs(exact - 0.5) < 0.03
    assert reverse - exact > 8 * standard_error  # measured: reverse 0.72, exact 0.51, MALA 0.48
    assert abs(mala - exact) < 3 * standard_error


def test_only_the_chosen_levels_get_mcmc():
    target = rrrdsl.compile(ring_bar())
    for levels, chosen in [((50, 99), range(50, 100)), (range(0, 100, 10), range(0, 100, 10)), (lambda t: t > 90, range(91, 100))]:
        config = AnnealedConfig(steps=2, mcmc_levels=levels, step_scale=2.0)
        result = anneal(target, MALA(), config, 20, torch.Generator().manual_seed(0))
        ran = torch.isfinite(result.levels.accept_mean)
        assert ran.nonzero().flatten().tolist() == list(chosen)
        # init + 2 steps at an MCMC level; the reverse step into level t reuses the kernel's cached
        # gradient at level t + 1 when level t + 1 ran MCMC, else it costs one score evaluation
        needs_score = torch.cat([~ran[1:], torch.tensor([False])])
        expected_nfe = 3.0 * ran.to(torch.float64) + needs_score.to(torch.float64)
        assert torch.equal(result.levels.nfe, expected_nfe)


def test_in_level_set():
    assert in_level_set(5, None) and in_level_set(5, (5, 7)) and not in_level_set(8, (5, 7))
    assert in_level_set(4, range(0, 10, 2)) and not in_level_set(5, range(0, 10, 2))
    assert in_level_set(60, lambda t: t > 50) and not in_level_set(50, lambda t: t > 50)


def test_adaptation_reaches_the_target_acceptance_from_any_scale():
    final = []
    for scale in (1e-3, 1e3):
        result = rrrdsl.sample(ring_bar(), "mala", n=200, seed=0, step_scale=scale, mcmc_levels=None, steps=8, progress=False)
        levels = result.diagnostics["levels"]
        assert abs(float(levels.accept_mean[:90].mean()) - 0.57) < 0.05
        final.append(float(levels.step_size[0]))
    assert final[1] / final[0] < 2.0  # the carried adaptation forgets the initial scale


def test_without_adaptation_the_step_size_is_c_beta_to_the_b():
    result = rrrdsl.sample(
        ring_bar(), "mala", n=10, seed=0, adapt=False, step_scale=0.3, step_exponent=0.5, steps=1, mcmc_levels=None,
        progress=False,
    )
    expected = 0.3 * rrrdsl.schedules.default().betas ** 0.5
    torch.testing.assert_close(result.diagnostics["levels"].step_size, expected)


@pytest.mark.parametrize("sampler", ["ula", "mala", "hmc"])
def test_huge_step_sizes_give_no_nan_and_report_divergences(sampler):
    result = rrrdsl.sample(ring_bar(), sampler, n=50, seed=0, step_size=1e30, adapt=False, steps=2, progress=False)
    assert torch.isfinite(result.x).all()
    assert float(result.diagnostics["levels"].divergences.sum()) > 0


def test_snapshots_keep_the_particles_at_chosen_levels():
    result = rrrdsl.sample(ring_bar(), "mala", n=30, seed=0, steps=1, snapshots=(99, 50, 0), progress=False)
    snapshots = result.diagnostics["snapshots"]
    assert sorted(snapshots) == [0, 50, 99]
    torch.testing.assert_close(snapshots[0], result.x)
    assert snapshots[99].std() > 3 * snapshots[0][:, 0].std()  # noisy at the top, sharp at the bottom


@pytest.mark.parametrize("step_size", [1e-3, 1e5])  # every chain finite; chains that overflow mid-run
def test_ula_fixed_steps_are_its_steps_bit_for_bit(step_size):
    """The driver's level loop for ULA (one finiteness test at the end, a rewound rerun when it
    fails) gives the states and infos of ``steps`` calls of ``ULA.step``; at ``1e5`` on a narrow
    Gaussian some chains overflow after a few steps and their moves are refused, which the
    unchecked run alone would not do."""
    target = rrrdsl.compile(rrrdsl.gmm(means=[[0.0, 0.0]], std=0.01))
    kernel, steps = ULA(), 8
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    start = kernel.init(x, target, 0)
    fast_generator, slow_generator = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    fast, infos = kernel.fixed_steps(start, target, 0, step_size, fast_generator, steps)
    slow, slow_infos = start, []
    for _ in range(steps):
        slow, info = kernel.step(slow, target, 0, step_size, slow_generator)
        slow_infos.append(info)
    refused = sum(int((~info.accepted).sum()) for info in slow_infos)
    assert (refused > 0) == (step_size > 1.0)
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))
    assert all(torch.equal(a, b) for fi, si in zip(infos, slow_infos, strict=True) for a, b in zip(fi, si))
    assert torch.equal(fast_generator.get_state(), slow_generator.get_state())


def test_step_sums_count_a_run_of_one_tensor_as_its_steps():
    """A level's summary against the per-step sums written out, with steps that return one
    read-only tensor again and again (added once, with the run's length) among fresh ones."""
    generator = torch.Generator().manual_seed(0)

    def info() -> StepInfo:
        accepted = torch.rand(7, generator=generator) < 0.5
        nfe = torch.randint(1, 4, (7,), generator=generator)
        return StepInfo(torch.rand(7, generator=generator), accepted, torch.rand(7, generator=generator) < 0.3, nfe)

    shared, first = info(), info()
    first = first._replace(accept_prob=first.accept_prob.double())  # float64: the sum must not be written into it
    kept = first.accept_prob.clone()
    infos = [first, shared, shared, info(), shared, shared, shared, info()]
    sums = StepSums()
    for step in infos:
        sums.add(step)
    accept, (mean, lowest, highest, divergences, nfe) = sums.finish(len(infos))
    expected = torch.stack([step.accept_prob.double() for step in infos]).mean(dim=0)
    torch.testing.assert_close(accept, expected, rtol=0.0, atol=1e-12)
    assert (mean, lowest, highest) == pytest.approx((float(expected.mean()), float(expected.min()), float(expected.max())), abs=1e-12)
    assert divergences == sum(int(step.divergent.sum()) for step in infos)
    assert nfe == pytest.approx(sum(int(step.nfe.sum()) for step in infos) / 7, abs=1e-12)
    assert torch.equal(first.accept_prob, kept)
