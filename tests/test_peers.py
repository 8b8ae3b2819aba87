"""``rrr bench peers``: the JAX ports of the targets equal rrrdsl's compiled densities, the peers
count their gradients, and the quick benchmark runs end to end (only with the peers extra)."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from rrrdsl.bench import jax_targets, peers, table
from rrrdsl.cli import main
from rrrdsl.compiler import compile as compile_expr
from rrrdsl.errors import CompileError
from rrrdsl.lang.ir import box, crop, gmm, oracle

#: every target of the benchmark, plus a mixture and a product of custom gmm/box oracles
EXPRESSIONS = [table.model_expr(c, "exact") for c in table.COMPOSITIONS if c.name in peers.TARGETS] + [
    0.3 * oracle("left_bar") + 0.7 * oracle("right_bar"),
    gmm(means=[[0.1, -0.2], [0.3, 0.4]], std=[0.2, 0.05], weights=[1, 3]) ** 1.5 * box(low=[-0.5, -0.5], high=[0.5, 0.5]),
]


def _points(n: int = 300, seed: int = 0) -> torch.Tensor:
    """Points over the bulk and well outside it (box tails, far from every mode)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([0.6 * torch.randn(n // 2, 2, generator=g, dtype=torch.float64),
                      4 * torch.rand(n - n // 2, 2, generator=g, dtype=torch.float64) - 2])


@pytest.mark.parametrize("expr", EXPRESSIONS, ids=str)
@pytest.mark.parametrize("level", [0, 40])
def test_jax_port_equals_the_compiled_log_density_and_score(expr, level):
    jax = pytest.importorskip("jax")
    pytest.importorskip("blackjax")
    pytest.importorskip("numpyro")

    target = compile_expr(expr)
    x = _points()
    expected_log_prob = target.log_prob(x, level).numpy()
    expected_score = target.score(x, level).numpy()
    with jax.enable_x64(True):
        log_density = jax_targets.jax_log_density(target, level)
        xj = jax.numpy.asarray(x.numpy())
        log_prob = np.asarray(jax.vmap(log_density)(xj))
        score = np.asarray(jax.vmap(jax.grad(log_density))(xj))
    assert log_prob.dtype == np.float64
    np.testing.assert_allclose(log_prob, expected_log_prob, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(score, expected_score, rtol=1e-8, atol=1e-8)


def test_jax_port_refuses_crops():
    pytest.importorskip("jax")
    pytest.importorskip("blackjax")
    pytest.importorskip("numpyro")
    target = compile_expr(crop(oracle("ring"), dims=slice(0, 2)) * oracle("bar"))
    with pytest.raises(CompileError, match="no rule for View"):
        jax_targets.jax_log_density(target)


def test_without_the_extra_the_benchmark_says_so_in_one_line(monkeypatch, capsys, tmp_path):
    real_import = builtins.__import__

    def no_blackjax(name, *args, **kwargs):
        if name == "blackjax":
            raise ImportError("No module named 'blackjax'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_blackjax)
    assert main(["bench", "peers", "--quick", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "peers extra" in err and "blackjax" in err
    assert not list(tmp_path.iterdir())


def test_quick_benchmark_counts_gradients_within_the_budget(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("blackjax")
    pytest.importorskip("numpyro")
    assert main(["bench", "peers", "--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "peers.md").read_text()
    assert "rrr bench peers --quick" in text and "$" not in text and "jax " in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| product |")]
    assert len(rows) == len(peers.QUICK.samplers)
    for row in rows:
        gradients = float(row[4])
        assert 500 < gradients <= peers.BUDGET, row
        assert float(row[2].split(" ")[0]) < 50, row  # MMD/floor finite and not absurd
