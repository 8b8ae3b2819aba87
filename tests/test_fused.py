"""The fused evaluation of exact oracles and the lean kernel steps (issue 14 item 7, issue 20 item 3).

* ``Oracle.log_prob_and_score`` equals ``log_prob`` and the autograd gradient, at int, per-chain
  and clean levels, in float64 (to float error) and float32;
* a compiled graph of oracles (products, powers, crops, mixtures with their weights, nested, with
  estimated normalisers) evaluates ``log_prob_and_grad`` without autograd (the fused path) and
  equals autograd of ``log_prob``; unnormalised responsibilities would not; a learned model falls
  back to autograd with the same numbers;
* ULA's step without per-chain selection (every chain finite) and with it (some proposals
  non-finite) keeps exactly the finite chains, and a level's sums count repeated infos right.
"""

from __future__ import annotations

import pytest
import torch

from rrrdsl.compiler import compile, plan
from rrrdsl.compiler.plan import Normaliser
from rrrdsl.lang.ir import crop, gmm, model, oracle
from rrrdsl.models.base import Model
from rrrdsl.models.oracles import Box, GaussianMixture, OracleMixture
from rrrdsl.models.registry import register_model
from rrrdsl.samplers.annealed import Records, mcmc_level
from rrrdsl.samplers.adapt import StepSizeAdapter
from rrrdsl.samplers.langevin import ULA

F64 = torch.float64


def _oracles():
    gmm_oracle = GaussianMixture([[0.0, 0.5], [1.0, -0.5], [-1.0, 0.0]], [[0.2, 0.4], [0.3, 0.25], [0.05, 0.1]], [0.5, 0.2, 0.3])
    box = Box([-0.7, -0.2], [0.7, 0.3])
    return {"gmm": gmm_oracle, "box": box, "mixture": OracleMixture([gmm_oracle, box], [0.3, 0.7])}


def _points(n: int = 24, dtype: torch.dtype = F64) -> torch.Tensor:
    return (0.8 * torch.randn(n, 2, generator=torch.Generator().manual_seed(3), dtype=F64)).to(dtype)


def _autograd(log_prob, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_prob(x).sum(), x)
    return grad


@pytest.mark.parametrize("name", ["gmm", "box", "mixture"])
@pytest.mark.parametrize("t", [0, 40, 99, "clean", "per-chain"])
def test_oracle_fused_evaluation_equals_log_prob_and_autograd(name, t):
    oracle_model = _oracles()[name]
    x = _points()
    if t == "per-chain":
        t = torch.arange(x.shape[0]) * 4
    if t == "clean" and name != "gmm":  # a clean box has no gradient: score 0 by convention
        return
    log_prob, score = oracle_model.log_prob_and_score(x, t)
    torch.testing.assert_close(log_prob, oracle_model.log_prob(x, t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(score, _autograd(lambda y: oracle_model.log_prob(y, t), x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(score, oracle_model.score(x, t), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gmm", "box", "mixture"])
def test_oracle_fused_evaluation_in_float32(name):
    """float32 against float64: within float32 error of the log density and of ``|score| + 1/sigma_t``
    (a level's scores are of order ``1/sigma_t`` near the data)."""
    oracle_model = _oracles()[name]
    x32 = _points(dtype=torch.float32)
    t = 20
    lp64, score64 = oracle_model.log_prob_and_score(x32.to(F64), t)
    lp32, score32 = oracle_model.log_prob_and_score(x32, t)
    scale = 1.0 / float(oracle_model.schedule.sigma[t])
    torch.testing.assert_close(lp32.to(F64), lp64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score32.to(F64), score64, rtol=1e-4, atol=1e-4 * scale)


class _StandIn(Model):
    """A learned-model stand-in (not an exact oracle): a Gaussian mixture's densities behind the plain protocol."""

    def __init__(self, schedule=None) -> None:
        self.inner = GaussianMixture([[0.2, -0.1]], 0.4, schedule=schedule)
        self.dim, self.schedule = 2, self.inner.schedule

    def log_prob(self, x, t):
        return self.inner.log_prob(x, t)

    def score(self, x, t):
        return self.inner.score(x, t)


register_model("_test_fused_stand_in", _StandIn, "a non-oracle model of test_fused.py")

FUSED = {
    "product and power": oracle("ring") * oracle("bar") ** 2 / oracle("gauss") ** 0.5,
    "crops": crop(gmm(means=[[0.2], [-0.5]], std=[0.3, 0.5]), dims=(0, 1)) * crop(gmm(means=[[0.1]], std=0.7), dims=(1, 2)) ** 1.5,
    "mixture": oracle("left_bar") + oracle("right_bar"),
    "weighted nested mixture": 0.3 * oracle("ring") + 0.7 * (oracle("bar") * oracle("gauss")),
    "mixture in a product": (0.5 * (oracle("ring") * oracle("bar")) + 0.5 * oracle("gauss")) * oracle("bar") ** 0.5,
    "mixture of mixtures": 0.4 * (0.5 * oracle("left_bar") + 0.5 * oracle("ring") ** 2) + 0.6 * oracle("right_bar"),
    "mixture in crops": crop(0.2 * gmm(means=[[0.2]], std=0.3) + 0.8 * gmm(means=[[-0.5]], std=0.5), dims=(0, 1))
    * crop(gmm(means=[[0.1]], std=0.7), dims=(1, 2)),
}
AUTOGRAD = {"learned leaf": oracle("ring") * model("_test_fused_stand_in")}


def _refuse_autograd(monkeypatch) -> None:
    """Make ``torch.autograd.grad`` fail: only the fused path can evaluate."""

    def refuse(*args, **kwargs):
        raise AssertionError("autograd was called")

    monkeypatch.setattr(torch.autograd, "grad", refuse)


@pytest.mark.parametrize("name", sorted(FUSED))
def test_oracle_graphs_are_evaluated_without_autograd(name, monkeypatch):
    target = compile(FUSED[name])
    x = _points(16)
    expected = (target.log_prob(x, 30), _autograd(lambda y: target.log_prob(y, 30), x))
    singles = {i: target.log_prob_and_grad(x[i : i + 1], level) for i, level in ((0, 0), (5, 30), (15, 90))}
    _refuse_autograd(monkeypatch)
    log_prob, grad = target.log_prob_and_grad(x, 30)
    per_chain = target.log_prob_and_grad(x, torch.arange(16) * 6)
    torch.testing.assert_close(log_prob, expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected[1], rtol=1e-9, atol=1e-9)
    for i, single in singles.items():
        torch.testing.assert_close(per_chain[0][i : i + 1], single[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(per_chain[1][i : i + 1], single[1], rtol=1e-9, atol=1e-9)


def test_mixtures_with_estimated_normalisers_are_fused(monkeypatch):
    """Each unnormalised component divided by its per-level ``Z_t`` (a constant in ``x``, here a
    made-up table): the fused gradient equals autograd's at one level and per chain."""
    target = compile(FUSED["mixture of mixtures"] * (0.3 * oracle("gauss") ** 3 + 0.7 * oracle("ring")))
    levels = torch.arange(target.num_levels, dtype=F64)
    target.normalise({term: Normaliser(torch.sin(levels + i) - 2.0 * i, torch.zeros_like(levels), "test") for i, term in enumerate(target.unnormalised)})
    assert len(target.normalisers) == 2
    x = _points(16)
    per_chain = torch.arange(16) * 6
    expected = [(target.log_prob(x, t), _autograd(lambda y: target.log_prob(y, t), x)) for t in (30, per_chain)]
    _refuse_autograd(monkeypatch)
    for t, (log_prob, grad) in zip((30, per_chain), expected):
        fused = target.log_prob_and_grad(x, t)
        torch.testing.assert_close(fused[0], log_prob, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(fused[1], grad, rtol=1e-9, atol=1e-9)


def test_clean_mixture_of_boxes_has_the_boxes_zero_score():
    """At the clean level a box's density is flat on its support: the fused gradient of a mixture
    of boxes is 0 there (the boxes' score convention; autograd of the clean ``log_prob`` is not)."""
    target = compile(FUSED["mixture"])
    x = _points(64)
    log_prob, grad = target.log_prob_and_grad(x, "clean")
    inside = torch.isfinite(log_prob)
    assert 0 < int(inside.sum()) < 64 and torch.equal(grad[inside], torch.zeros_like(grad[inside]))


def test_unnormalised_responsibilities_are_caught(monkeypatch):
    """The check above can fail: with ``exp(parts)`` in place of the softmax, the fused gradient
    of a mixture is no longer autograd's."""
    target = compile(FUSED["weighted nested mixture"])
    x = _points(16)
    expected = _autograd(lambda y: target.log_prob(y, 30), x)
    monkeypatch.setattr(plan, "_responsibilities", lambda parts, log_total: torch.exp(parts))
    assert not torch.allclose(target.log_prob_and_grad(x, 30)[1], expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", sorted(AUTOGRAD))
def test_other_graphs_fall_back_to_autograd(name, monkeypatch):
    """A learned leaf needs autograd: it gives the gradient (equal to autograd of ``log_prob``),
    and with autograd refused the evaluation fails, so no fused path is taken."""
    target = compile(AUTOGRAD[name])
    x = _points(8)
    log_prob, grad = target.log_prob_and_grad(x, 10)
    torch.testing.assert_close(log_prob, target.log_prob(x, 10))
    torch.testing.assert_close(grad, _autograd(lambda y: target.log_prob(y, 10), x))
    _refuse_autograd(monkeypatch)
    with pytest.raises(AssertionError, match="autograd was called"):
        target.log_prob_and_grad(_points(8), 10)


def test_ula_keeps_exactly_the_finite_chains():
    """Per-chain step sizes, a few of them huge: those chains' proposals overflow and are refused,
    the others move as they would alone (the path with per-chain selection); all small: the path
    without selection gives the same moves."""
    target = compile(oracle("gauss"))
    x = _points(8, torch.float32)
    step = torch.full((8,), 1e-3)
    step[[1, 6]] = 1e38
    kernel = ULA()
    state = kernel.init(x, target, 0)
    new, info = kernel.step(state, target, 0, step, torch.Generator().manual_seed(0))
    moved = torch.ones(8, dtype=torch.bool)
    moved[[1, 6]] = False
    assert torch.equal(info.accepted, moved) and torch.equal(info.divergent, ~moved)
    assert torch.equal(new.x[~moved], x[~moved]) and torch.isfinite(new.x).all()
    alone, alone_info = kernel.step(state, target, 0, 1e-3, torch.Generator().manual_seed(0))
    assert torch.equal(new.x[moved], alone.x[moved]) and alone_info.accepted.all()


def test_level_sums_count_repeated_infos():
    """ULA returns one info object for steps where every chain moved; the level's acceptance,
    divergences and gradient count are those of adding every step."""
    target = compile(oracle("gauss"))
    kernel = ULA()
    state = kernel.init(_points(8, torch.float32), target, 3)
    records = Records(target.num_levels)
    adapter = StepSizeAdapter(torch.full((target.num_levels,), 1e-3, dtype=F64), None)
    _, nfe = mcmc_level(state, target, kernel, adapter, 7, 3, torch.Generator().manual_seed(0), records, 1.0)
    assert nfe == 8.0
    assert records.accept_mean[3] == records.accept_min[3] == 1.0 and records.divergences[3] == 0.0
