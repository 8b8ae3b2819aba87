"""SMC / AIS over the levels: exact log Z for a Gaussian product, broken weights fail, errors."""

import math

import pytest
import torch

import rrrdsl
from rrrdsl.errors import SamplerError
from rrrdsl.samplers import smc as smc_module
from rrrdsl.samplers.distributed import Group
from rrrdsl.samplers.smc import SMCWeights
from rrrdsl.schedules import default

MEAN_A, STD_A = [0.3, -0.2], [0.4, 0.3]
MEAN_B, STD_B = [-0.1, 0.2], [0.5, 0.5]


def gaussian_product():
    return rrrdsl.gmm(means=[MEAN_A], std=[STD_A]) * rrrdsl.gmm(means=[MEAN_B], std=[STD_B])


def exact_log_z(level: int = 0) -> float:
    """``log ∫ N(x; a μ_A, v_A) N(x; a μ_B, v_B) dx = log N(a μ_A - a μ_B; 0, v_A + v_B)`` per axis."""
    alpha_bar = float(default().alpha_bar[level])
    total = 0.0
    for ma, sa, mb, sb in zip(MEAN_A, STD_A, MEAN_B, STD_B):
        var = alpha_bar * (sa**2 + sb**2) + 2 * (1 - alpha_bar)
        diff = math.sqrt(alpha_bar) * (ma - mb)
        total += -0.5 * diff**2 / var - 0.5 * math.log(2 * math.pi * var)
    return total


def run_smc(**options):
    """SMC on the Gaussian product; the fixed walk over every level unless ``levels`` says otherwise."""
    options = {"n": 2000, "seed": 0, "steps": 2, "levels": "schedule", "dtype": "float64", "progress": False, **options}
    return rrrdsl.sample(gaussian_product(), "smc", **options)


@pytest.mark.parametrize("walk", [{"reverse": "ddpm"}, {"reverse": None}, {"levels": "adaptive"}])
def test_log_z_of_a_gaussian_product(walk):
    result = run_smc(**walk)
    assert abs(result.diagnostics["log_z"] - exact_log_z()) < 0.1
    levels = result.diagnostics["levels"]
    visited = levels.nfe > 0  # every level for the fixed walk, those it chose for the adaptive one
    assert torch.isfinite(levels.ess[visited]).all() and levels.ess[~visited].isnan().all()
    walkers = 2000 * result.diagnostics["options"]["oversample"] if walk.get("levels") == "adaptive" else 2000
    assert float(levels.ess[visited].max()) <= walkers * (1 + 1e-9)


def test_log_z_without_the_backward_kernel_term_is_wrong(monkeypatch):
    def without_backward(schedule, t, x_prev, log_prob_prev, x, log_prob, transition):
        increment = log_prob - log_prob_prev
        if transition is None:
            return increment
        return increment - smc_module.transition_log_prob(transition, x)

    monkeypatch.setattr(smc_module, "incremental_log_weight", without_backward)
    assert abs(run_smc().diagnostics["log_z"] - exact_log_z()) > 0.1


def test_log_z_without_weighting_the_initial_draw_is_wrong(monkeypatch):
    monkeypatch.setattr(smc_module, "initial_log_weight", lambda x, log_prob: torch.zeros_like(log_prob))
    assert abs(run_smc(reverse=None).diagnostics["log_z"] - exact_log_z()) > 0.1


def test_resampling_follows_the_threshold():
    never = run_smc(threshold=0.0, n=200).diagnostics["levels"]
    always = run_smc(threshold=1.0, n=200).diagnostics["levels"]
    # threshold 0 never resamples on the way, only at the last level (the output is unweighted)
    assert float(never.resampled.sum()) == 1 and float(never.resampled[0]) == 1
    assert float(always.resampled.sum()) >= 99  # ESS < N at every level after the first reweighting


def test_systematic_resampling_is_unbiased():
    weights = torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=torch.float64)
    index = Group().resample(weights.log(), torch.Generator().manual_seed(0)).order
    counts = torch.bincount(index, minlength=4).to(torch.float64)
    # systematic resampling keeps every count within 1 of N * w
    assert ((counts - 4 * weights).abs() < 1 + 1e-9).all()
    many = Group().resample((weights.repeat_interleave(250) / 250).log(), torch.Generator().manual_seed(1)).order
    assert abs(float((many // 250 == 2).double().mean()) - 0.6) <= 1 / 1000 + 1e-9


def test_resampling_is_unchanged_by_a_constant_in_the_log_weights():
    # log weights of thousands (image energies) underflowed exp and resampled NaN counts
    weights = torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=torch.float64)
    orders = [Group().resample(weights.log() + shift, torch.Generator().manual_seed(0)).order for shift in (0.0, -2000.0, 2000.0)]
    assert torch.equal(orders[0], orders[1]) and torch.equal(orders[0], orders[2])


def test_log_z_estimate_bookkeeping():
    weights = SMCWeights(default(), 4, threshold=1.0)
    weights.start(torch.zeros(4, 2), torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0])) - math.log(2 * math.pi))
    first = math.log(2.5)  # mean of the initial weights p / N(0, I)
    assert weights.log_z() == pytest.approx(first)
    assert weights.resample(torch.zeros(4, 2), torch.Generator().manual_seed(0)) is not None
    assert weights.log_z() == pytest.approx(first)


def test_smc_needs_energies():
    target = rrrdsl.compile(gaussian_product())

    class ScoreOnly:
        dim, num_levels, schedule, has_energy = target.dim, target.num_levels, target.schedule, False
        score = staticmethod(target.score)

    with pytest.raises(SamplerError, match="score-only"):
        rrrdsl.sample(ScoreOnly(), "smc", n=10, progress=False)


def test_smc_rejects_a_deterministic_ddim_move():
    with pytest.raises(SamplerError, match="eta"):
        run_smc(reverse="ddim", eta=0.0)


def _positive_mode_fraction(monkeypatch=None, final: bool = True) -> tuple[float, float]:
    """SMC without resampling on the way (threshold 0) on a two-mode product whose reverse
    diffusion is biased; returns (fraction of samples in the x > 0 mode, exact fraction)."""
    from rrrdsl import truth

    expr = rrrdsl.gmm(means=[[-0.5], [0.5]], std=0.05) * rrrdsl.gmm(means=[[0.5]], std=0.6)
    if not final:
        resample = SMCWeights.resample
        monkeypatch.setattr(SMCWeights, "resample", lambda self, x, generator, final=False: resample(self, x, generator, False))
    x = rrrdsl.sample(expr, "smc", n=2000, seed=0, threshold=0.0, levels="schedule", dtype="float64", progress=False).x
    grid = truth.grid(expr, 0)
    exact = float(grid.density[grid.axes[0] > 0].sum() * grid.cell_area)
    return float((x[:, 0] > 0).double().mean()), exact


def test_the_output_is_resampled_at_the_last_level():
    """The particles come back unweighted: dropping the final weights instead of resampling
    keeps the proposal's mode imbalance (exact 0.798; the broken variant gives 0.76)."""
    fraction, exact = _positive_mode_fraction()
    assert abs(fraction - exact) < 0.025  # ~2.8 binomial standard errors at N = 2000


def test_dropping_the_final_weights_is_detected(monkeypatch):
    fraction, exact = _positive_mode_fraction(monkeypatch, final=False)
    assert abs(fraction - exact) > 0.025
