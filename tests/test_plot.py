"""Pictures: panels and titles, exact densities, the fallback density, image grids, PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import pytest

import rrrdsl
from rrrdsl import gmm, oracle, plot

CHEAP = dict(progress=False, steps=2, mcmc_levels=(0, 1))


@pytest.fixture(scope="module")
def ring_bar():
    p = oracle("ring") * oracle("bar")
    target = rrrdsl.compile(p)
    reverse = rrrdsl.sample(target, "reverse", n=50, seed=0, progress=False, snapshots=(99, 9, 0))
    mala = rrrdsl.sample(target, "mala", n=50, seed=0, snapshots=(99, 50, 9, 0), **CHEAP)
    return p, target, [reverse, mala]


def titles(figure) -> list[str]:
    return [ax.get_title() for ax in figure.axes]


def test_samples_figure_has_exact_panel_and_says_how(ring_bar) -> None:
    p, target, results = ring_bar
    figure = plot.samples_figure(p, target, results, label="p")
    assert titles(figure) == ["exact, N=50", "reverse, N=50, NFE 99", f"mala, N=50, NFE {results[1].diagnostics['nfe']:.0f}"]
    assert figure._suptitle.get_text() == 'p = oracle("ring") * oracle("bar")  [exact density]'


def test_diagnostics_and_annealing_strip(ring_bar) -> None:
    p, target, results = ring_bar
    assert plot.diagnostics(p, results[:1]) is None  # reverse diffusion alone has no MCMC
    figure = plot.diagnostics(p, results)
    assert titles(figure) == ["acceptance", "step size"]
    strip = plot.annealing_strip(p, target, results[1])
    assert [t.split(" (")[0] for t in titles(strip)] == ["level 99", "level 50", "level 9", "level 0"]
    assert set(plot.figures(p, target, results)) == {"", "-diagnostics", "-annealing"}


def test_density_is_exact_and_normalised_for_oracles_else_unnormalised() -> None:
    p = gmm(means=[[0, 0]], std=0.2)
    target = rrrdsl.compile(p)
    bounds = np.array([[-2.0, 2.0], [-2.0, 2.0]])
    (gx, gy), values = plot.density(p, target, bounds)
    cell = (gx[1] - gx[0]) * (gy[1] - gy[0])
    assert abs(values.sum() * cell - 1) < 1e-6
    peak = 1 / (2 * np.pi * 0.2**2)  # the exact N(0, 0.2^2 I) density at its mode, level 0 ~ clean
    assert abs(values.max() / peak - 1) < 0.05
    # a grid that cuts off mass: truth refuses it, the compiled target's log_prob is used
    (_, _), fallback = plot.density(p, target, np.array([[-0.1, 0.1], [-0.1, 0.1]]))
    assert fallback.max() == pytest.approx(1.0)


def test_image_like_targets_get_sample_grids(tmp_path: Path) -> None:
    p = gmm(means=[[0.0] * 16, [1.0] * 16], std=0.1)
    target = rrrdsl.compile(p)
    result = rrrdsl.sample(target, "reverse", n=10, seed=0, progress=False)
    assert plot.image_shape(target) == (4, 4)
    figure = plot.samples_figure(p, target, [result])
    (image,) = figure.axes[0].get_images()
    assert image.get_array().shape == (19, 14)  # 10 samples: 4 rows of 3 tiles of 4x4, 1-pixel gaps
    path = plot.save_figure(figure, tmp_path / "sub" / "grid.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert [f.name for f in (tmp_path / "sub").iterdir()] == ["grid.png"]


def test_a_result_alone_is_one_small_panel_a_scatter_a_histogram_or_an_image_mosaic() -> None:
    from rrrdsl.samplers.result import SampleResult

    how = {"sampler": "reverse", "nfe": 100.0}
    generator = torch.Generator().manual_seed(0)
    for dim, drawn in ((2, "collections"), (5, "collections"), (1, "patches"), (64, "images")):
        figure = plot.result_figure(SampleResult(torch.randn(30, dim, generator=generator), how))
        (ax,) = figure.axes
        assert len(getattr(ax, drawn)) > 0, dim
        assert ax.get_title() == "reverse, N=30, NFE 100" + (" (coordinates 0, 1)" if dim == 5 else "")
    (ax,) = plot.result_figure(SampleResult(torch.randn(30, 64, generator=generator), how)).axes
    assert ax.images[0].get_array().shape == (53, 44)  # 30 8x8 tiles: 6 rows of 5, with 1-pixel gaps
