"""``rrrdsl.sample``: defaults, reproducibility, option validation before any work, results."""

import io
import json
import sys

import pytest
import torch

import rrrdsl
from rrrdsl.errors import SamplerError
from rrrdsl.samplers.api import SAMPLERS, SampleResult

SHORT = {"steps": 1, "mcmc_levels": (0, 2), "progress": False}
#: SMC's adaptive walk takes no level sets: a small budget instead
SHORT_SMC = {"steps": 1, "budget": 30, "progress": False}


def gaussian():
    return rrrdsl.gmm(means=[[0.2, -0.1]], std=0.3)


class Counting:
    """A compiled target that counts its evaluations; ``has_energy`` can be switched off."""

    def __init__(self, expr, has_energy=True):
        self.inner = rrrdsl.compile(expr)
        self.dim, self.num_levels, self.schedule = self.inner.dim, self.inner.num_levels, self.inner.schedule
        self.has_energy = has_energy
        self.calls = 0

    def score(self, x, t):
        self.calls += 1
        return self.inner.score(x, t)

    def log_prob(self, x, t):
        assert self.has_energy
        self.calls += 1
        return self.inner.log_prob(x, t)

    def log_prob_and_grad(self, x, t):
        assert self.has_energy
        self.calls += 1
        return self.inner.log_prob_and_grad(x, t)


def test_default_sampler_is_smc_with_energies_and_ula_without():
    assert rrrdsl.sample(gaussian(), n=20, steps=1, progress=False).diagnostics["sampler"] == "smc"
    score_only = rrrdsl.sample(Counting(gaussian(), has_energy=False), n=20, **SHORT)
    assert score_only.diagnostics["sampler"] == "ula"


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_fixed_seed_gives_identical_output(sampler):
    options = {} if sampler in ("reverse", "ddim") else SHORT_SMC if sampler == "smc" else SHORT
    options = {"progress": False, **options}
    first = rrrdsl.sample(gaussian(), sampler, n=50, seed=3, **options)
    second = rrrdsl.sample(gaussian(), sampler, n=50, seed=3, **options)
    other = rrrdsl.sample(gaussian(), sampler, n=50, seed=4, **options)
    assert first.x.shape == (50, 2)
    assert torch.equal(first.x, second.x)
    assert not torch.equal(first.x, other.x)


def test_an_expression_and_its_compiled_target_give_the_same_samples():
    a = rrrdsl.sample(gaussian(), "mala", n=40, seed=1, **SHORT)
    b = rrrdsl.sample(rrrdsl.compile(gaussian()), "mala", n=40, seed=1, **SHORT)
    assert torch.equal(a.x, b.x)


@pytest.mark.parametrize(
    "sampler, options, message",
    [
        ("mala", {"stpes": 3}, "did you mean 'steps'"),
        ("hmc", {"leapfrg": 3}, "did you mean 'leapfrog'"),
        ("smc", {"treshold": 0.3}, "did you mean 'threshold'"),
        ("reverse", {"steps": 3}, "unknown option 'steps'"),
        ("mala", {"n": 0}, "'n' must be an integer in 1..10000000"),
        ("mala", {"steps": -1}, "'steps' must be an integer in 0..10000"),
        # sizes are bounded before any work (a seed must fit torch's 64 bits)
        ("mala", {"n": 10**7 + 1}, "'n' must be an integer in 1..10000000"),
        ("mala", {"seed": 2**64}, "'seed' must be an integer in 0..18446744073709551615"),
        ("mala", {"steps": 10**300}, "'steps' must be an integer in 0..10000"),
        ("mala", {"allow_nonfinite": 1}, "'allow_nonfinite' must be true or false"),
        ("mala", {"adapt": "false"}, "'adapt' must be true or false"),
        ("mala", {"device": "meta"}, "option 'device' must be 'cpu' or 'cuda', got 'meta'"),
        ("mala", {"step_size": 0.0}, "'step_size' must be a finite number > 0"),
        ("mala", {"step_size": float("nan")}, "'step_size' must be a finite number > 0"),
        ("ddim", {"eta": 1.5}, "'eta' must be a number in [0, 1]"),
        ("smc", {"threshold": -0.1}, "'threshold' must be a number in [0, 1]"),
        ("mala", {"reverse": "ddpn"}, "did you mean 'ddpm'"),
        ("mala", {"mcmc_levels": (0, 100)}, "level 100 is outside 0..99"),
        ("mala", {"mcmc_levels": (5, 2)}, "option 'mcmc_levels' must be an inclusive pair (lo, hi) with lo <= hi"),
        ("mala", {"mcmc_levels": [1, 2, 3]}, "'mcmc_levels' must be None, an inclusive pair"),
        ("mala", {"dtype": "float16"}, "'dtype' must be one of 'float32' or 'float64'"),
        ("hmc", {"leapfrog": 0}, "leapfrog"),
        ("smc", {"kernel": "mal"}, "did you mean 'mala'"),
        ("mlaa", {}, "did you mean 'mala'"),
        # each kernel's options dataclass checks its own ranges, before any work too
        ("mala", {"mh": "exakt"}, "option 'mh' must be one of 'exact' or 'line_integral', got 'exakt'"),
        ("hmc", {"damping": 1.0}, "option 'damping' must be a number in [0, 1), got 1.0"),
        ("uha", {"leapfrog": 2.5}, "option 'leapfrog' must be an integer >= 1, got 2.5"),
        ("nuts", {"max_tree_depth": 16}, "option 'max_tree_depth' must be an integer in 1..15, got 16"),
        ("smc", {"kernel": "hmc", "damping": -0.1}, "option 'damping' must be a number in [0, 1), got -0.1"),
        ("nuts", {"max_tree_dept": 3}, "did you mean 'max_tree_depth'"),
        ("ula", {"mh": "exact"}, "unknown option 'mh' for sampler 'ula'"),
    ],
)
def test_bad_options_are_rejected_before_any_work(sampler, options, message):
    target = Counting(gaussian())
    options = {"n": 10, **options}
    with pytest.raises(SamplerError) as error:
        rrrdsl.sample(target, sampler, progress=False, **options)
    assert message in str(error.value)
    assert target.calls == 0


def test_exact_metropolis_on_a_score_only_target_points_to_the_line_integral():
    for sampler in ("mala", "hmc"):
        target = Counting(gaussian(), has_energy=False)
        with pytest.raises(SamplerError, match="mh='line_integral'"):
            rrrdsl.sample(target, sampler, n=10, **SHORT)
        assert target.calls == 0
    result = rrrdsl.sample(Counting(gaussian(), has_energy=False), "mala", n=10, mh="line_integral", **SHORT)
    assert torch.isfinite(result.x).all()


def test_smc_on_a_score_only_target_is_a_clear_error():
    with pytest.raises(SamplerError, match="score-only"):
        rrrdsl.sample(Counting(gaussian(), has_energy=False), "smc", n=10, **SHORT_SMC)


def test_result_diagnostics_and_json():
    result = rrrdsl.sample(gaussian(), "smc", n=30, steps=1, dtype="float64", snapshots=(50,), progress=False)
    assert isinstance(result, SampleResult) and result.x.dtype == torch.float64
    diagnostics = result.diagnostics
    levels = diagnostics["levels"]
    assert levels.nfe.shape == (100,) and diagnostics["nfe"] == pytest.approx(float(levels.nfe.sum()))
    assert diagnostics["nfe"] <= 1000 and diagnostics["wall_time"] > 0
    assert isinstance(diagnostics["log_z"], float)
    assert diagnostics["options"]["kernel"] == "mala" and diagnostics["options"]["threshold"] == 0.5
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert len(data["x"]) == 30 and len(data["diagnostics"]["levels"]["ess"]) == 100
    assert data["diagnostics"]["levels"]["accept_mean"][50] is not None
    assert set(data["diagnostics"]["snapshots"]) == {"50"}


@pytest.mark.slow
def test_default_budget_is_at_most_1000_nfe_per_particle():
    for sampler in SAMPLERS:
        result = rrrdsl.sample(gaussian(), sampler, n=20, seed=0, progress=False)
        assert result.diagnostics["nfe"] <= 1000, sampler


def test_no_progress_bar_when_stderr_is_not_a_terminal(capsys):
    rrrdsl.sample(gaussian(), "reverse", n=10, progress=True)
    assert capsys.readouterr().err == ""


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_text_progress_bar_over_the_levels_at_a_terminal_and_none_when_asked(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    rrrdsl.sample(gaussian(), "reverse", n=10, progress=False)
    assert terminal.getvalue() == ""
    rrrdsl.sample(gaussian(), "reverse", n=10, progress=True)
    assert terminal.getvalue().startswith("\rlevels:   0%|") and "/100 [" in terminal.getvalue()


def test_default_level_ranges_fit_a_short_schedule_and_given_ones_are_checked():
    from rrrdsl import schedules

    target = rrrdsl.compile(rrrdsl.oracle("ring") * rrrdsl.oracle("bar"), schedules.cosine(8))
    for sampler in ("mala", "ula", "reverse"):
        result = rrrdsl.sample(target, sampler, n=20, seed=0, progress=False)
        assert torch.isfinite(result.x).all()
    assert rrrdsl.sample(target, "mala", n=20, seed=0, progress=False).diagnostics["options"]["mcmc_levels"] == (0, 7)
    with pytest.raises(SamplerError, match="levels in 0..7"):
        rrrdsl.sample(target, "mala", n=20, seed=0, mcmc_levels=(0, 9))


def test_the_work_bound_counts_the_line_integrals_quadrature_points():
    from rrrdsl.samplers import api

    target = rrrdsl.compile(rrrdsl.oracle("ring"))
    options = dict(steps=10_000, mcmc_levels=(0, 99), mh="line_integral")
    assert api.check(target, "mala", n=10, points=2, **options) == "mala"  # 10^6 gradients: the limit
    with pytest.raises(SamplerError, match="4,000,000 gradient evaluations"):
        api.check(target, "mala", n=10, points=5, **options)
