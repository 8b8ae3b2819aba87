"""The residual MLP (rrrdsl.zoo.nets) and its two parameterisations (rrrdsl.zoo.toy2d.models)."""

from __future__ import annotations

import pytest
import torch

from rrrdsl import schedules
from rrrdsl.errors import CompileError, InvalidValueError
from rrrdsl.zoo.toy2d.models import EnergyModel, make_model
from rrrdsl.zoo.toy2d.train import init_model

SCHEDULE = schedules.cosine(20)


def tiny(param: str, seed: int = 0, width: int = 32, depth: int = 2):
    return init_model(param, 2, SCHEDULE, width=width, depth=depth, seed=seed)


def points(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


class WrongSigmaEnergy(EnergyModel):
    """Deliberately broken: divides the noise prediction by sigma^2 instead of sigma."""

    def score(self, x, t):
        return -self.predict_eps(x, t) / self.sigma(t, x) ** 2


def autograd_score_error(model: EnergyModel, x: torch.Tensor, t) -> float:
    """Largest relative gap between ∇_x log_prob (autograd) and model.score."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.log_prob(x, t).sum(), x)
    score = model.score(x.detach(), t)
    return float((grad - score).abs().max() / score.abs().max())


@pytest.mark.parametrize("t", [0, 7, 19, "per-chain"])
def test_energy_gradient_is_the_score(t):
    model = tiny("energy")
    x = points()
    level = torch.arange(64) % SCHEDULE.num_levels if t == "per-chain" else t
    assert autograd_score_error(model, x, level) < 1e-5


def test_broken_score_is_rejected():
    broken = WrongSigmaEnergy(tiny("energy").net, SCHEDULE)
    assert autograd_score_error(broken, points(), 3) > 0.1


def test_log_prob_and_grad_matches_separate_calls():
    model = tiny("energy")
    x = points()
    log_prob, grad = model.log_prob_and_grad(x, 5)
    torch.testing.assert_close(log_prob, model.log_prob(x, 5).detach())
    torch.testing.assert_close(grad, model.score(x, 5))
    assert not log_prob.requires_grad and not grad.requires_grad


def test_energy_model_scores_under_no_grad():
    """Samplers call score inside torch.no_grad(); the energy gradient must still be taken."""
    model = tiny("energy")
    with torch.no_grad():
        score = model.score(points(), 4)
    torch.testing.assert_close(score, model.score(points(), 4))


def test_score_model_is_minus_eps_over_sigma():
    model = tiny("score")
    x = points()
    _, sigma = SCHEDULE.at(6, x)
    torch.testing.assert_close(model.score(x, 6), -model.net(x, torch.tensor([6])) / sigma)
    assert not model.has_energy
    with pytest.raises(CompileError, match="no energy"):
        model.log_prob(x, 6)


def test_per_chain_levels_equal_a_loop_over_levels():
    for param in ("energy", "score"):
        model = tiny(param)
        x = points(10)
        levels = torch.tensor([0, 3, 3, 19, 7, 1, 0, 12, 5, 8])
        batched = model.score(x, levels)
        looped = torch.stack([model.score(x[i : i + 1], int(levels[i]))[0] for i in range(10)])
        torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)


def test_float64_points_give_float64_results():
    model = tiny("energy")
    x = points()
    log_prob, grad = model.log_prob_and_grad(x.double(), 3)
    assert log_prob.dtype == grad.dtype == torch.float64
    torch.testing.assert_close(grad.float(), model.score(x, 3), rtol=1e-4, atol=1e-4)


def test_clean_level_is_rejected():
    with pytest.raises(InvalidValueError, match="clean"):
        tiny("energy").score(points(), "clean")


def test_default_architecture_and_size():
    model = make_model("energy", 2, schedules.default())
    assert (model.net.width, model.net.depth) == (128, 4)
    assert len(model.net.blocks) == 4
    n_bytes = sum(p.numel() * p.element_size() for p in model.net.state_dict().values())
    assert n_bytes < 1_000_000


def test_seeded_initialisation_is_reproducible_and_local():
    state = torch.random.get_rng_state()
    a, b, c = tiny("score", seed=1), tiny("score", seed=1), tiny("score", seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.net.parameters(), c.net.parameters()))


def test_unknown_parameterisation_suggests():
    with pytest.raises(InvalidValueError, match="energy"):
        make_model("enrgy", 2, SCHEDULE)


def test_compiled_target_gradient_equals_summed_model_scores(tmp_path):
    """The compiler's log_prob_and_grad over learned leaves equals the sum of model scores."""
    compiler = pytest.importorskip("rrrdsl.compiler")
    from rrrdsl.lang.ir import model as leaf
    from rrrdsl.zoo.toy2d import loading

    for seed, name in enumerate(["nets_test_a", "nets_test_b"]):
        loading.save(init_model("energy", 2, schedules.default(), 32, 2, seed), tmp_path / f"{name}-energy")
    loading.register_directory(tmp_path)
    target = compiler.compile(leaf("nets_test_a") * leaf("nets_test_b") ** 2)
    a, b = loading.load(tmp_path / "nets_test_a-energy"), loading.load(tmp_path / "nets_test_b-energy")
    x = points()
    log_prob, grad = target.log_prob_and_grad(x, 30)
    torch.testing.assert_close(grad, a.score(x, 30) + 2 * b.score(x, 30), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(log_prob, (a.log_prob(x, 30) + 2 * b.log_prob(x, 30)).detach(), rtol=1e-4, atol=1e-4)
