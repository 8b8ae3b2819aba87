"""``rrr bench digits [--per-label K] [--weights W ...]``: guidance, negation and tapestries on
8×8 digits, judged by an independent classifier.

For every label k = 0..9 and guidance weight w, two guided targets are sampled at (about)
equal NFE per particle with reverse diffusion (DDPM), unadjusted annealed Langevin (ULA) and
the Metropolis-corrected samplers (MALA, HMC, SMC with MALA moves):

* classifier guidance       ``model("digits") * classifier("digits", label=k) ** w``
  (Dhariwal & Nichol, 2021);
* classifier-free guidance  ``model("digits", label=k) ** w / model("digits") ** (w - 1)``
  (Ho & Salimans, 2022), the product form of Du et al. (2023).

Metrics (the shipped digits evaluator, trained on clean digits of another split, seed and
architecture than the guidance classifier): accuracy for the requested label and the Fréchet
distance (Heusel et al., 2017) of its features to the held-out test digits. The guidance
classifier's own mean ``p(y = k | x)`` at level 0 is reported beside them: it tells a sampler
that follows the classifier harder than the product density does (reverse diffusion with summed
scores) from one that samples the product. Negation
``model("digits") / model("digits", label=1) ** 0.5`` is compared with ``model("digits")`` by
the fraction of samples the evaluator calls a one. A 2D check with exact truth explains the
direction of the guidance results: on ``oracle("ring_left") ** w / oracle("ring") ** (w - 1)``
(four equal modes), the weights of the modes under reverse diffusion, MALA and exact samples.

Writes ``digits.md`` (prose in ``templates/digits.md``) and ``digits-*.png``; findings written
by hand from a run are kept apart, in ``benchmarks/results/digits-findings.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from .. import truth
from ..compiler import compile as compile_expr
from ..lang.ir import Expr, classifier, crop, model, oracle
from ..metrics import frechet_distance, mode_weights
from ..plot import IMAGE_GRID, images_figure, save_figure
from ..samplers.api import SampleResult, sample
from ..zoo.digits.data import load as load_digits
from ..zoo.digits.loading import shipped
from .common import RADIUS, render, ring_centers, write_report

#: samples shown per label in the grids (the helper shows IMAGE_GRID**2 images)
GRID = IMAGE_GRID * IMAGE_GRID // 10
#: sampler -> options; the MCMC budget sits on the last ten levels, as in the 2D benchmarks; SMC
#: keeps the fixed walk with reverse moves it was measured with (``digits.md``)
SAMPLERS = {
    "reverse": {},
    "ula": {"steps": 30, "mcmc_levels": (0, 9)},
    "mala": {"steps": 30, "mcmc_levels": (0, 9)},
    "hmc": {"steps": 30, "mcmc_levels": (0, 9)},
    "smc": {"steps": 3, "reverse_levels": (10, 99), "levels": "schedule"},
}
GUIDANCE = ("classifier guidance", "classifier-free guidance")


def guided(mode: str, label: int, w: float) -> Expr:
    if mode == "classifier guidance":
        return model("digits") * classifier("digits", label=label) ** w
    return model("digits", label=label) ** w / model("digits") ** (w - 1)


def run(expr: Expr, sampler: str, n: int, seed: int) -> SampleResult:
    return sample(compile_expr(expr, canvas=(8, 8)), sampler=sampler, n=n, seed=seed, **SAMPLERS[sampler])


def evaluate(x: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """The evaluator's accuracy on ``x`` (clipped to [-1, 1]) and the Fréchet distance to ``reference``."""
    evaluator = shipped("evaluator").net
    x = x.float().clamp(-1, 1)
    accuracy = float((evaluator.predict(x) == labels).float().mean())
    with torch.no_grad():
        fd = frechet_distance(evaluator.features(x), evaluator.features(reference))
    return accuracy, fd


def guide_confidence(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean ``p(y = label | x)`` of the *guidance* classifier at level 0 (samples unclipped)."""
    net = shipped("classifier").net
    with torch.no_grad():
        logits = net(x.float(), torch.zeros(len(x), dtype=torch.long))
    return float(torch.softmax(logits, -1).gather(-1, labels[:, None]).mean())


def guidance_rows(per_label: int, weights: list[float], test_x: torch.Tensor, out: Path) -> list[str]:
    """One table line per (guidance, w, sampler); image grids of the last weight."""
    lines = []
    for mode in GUIDANCE:
        for w in weights:
            for sampler in SAMPLERS:
                xs, ys, nfe, start, grid = [], [], 0.0, time.perf_counter(), []
                for label in range(10):
                    result = run(guided(mode, label, w), sampler, per_label, seed=label)
                    xs.append(result.x)
                    ys.append(torch.full((per_label,), label))
                    nfe = result.diagnostics["nfe"]
                    grid.append(result.x[:GRID])
                accuracy, fd = evaluate(torch.cat(xs), torch.cat(ys), test_x)
                confidence = guide_confidence(torch.cat(xs), torch.cat(ys))
                seconds = time.perf_counter() - start
                lines.append(f"| {mode} | {w:g} | {sampler} | {nfe:.0f} | {accuracy:.3f} | {fd:.2f} | {confidence:.3f} | {seconds:.0f} |")
                print(lines[-1], flush=True)
                if w == weights[-1] and sampler in ("reverse", "mala"):
                    shown = SampleResult(torch.cat(grid).clamp(-1, 1), result.diagnostics)
                    title = f"{mode}, w={w:g}, {sampler}: labels 0..9, {GRID} each"
                    expr = model("digits")
                    figure = images_figure(expr, compile_expr(expr, canvas=(8, 8)), [shown], title)
                    save_figure(figure, out / f"digits-{mode.split()[0]}-{sampler}.png")
    return lines


def negation_rows(n: int) -> list[str]:
    """The fraction of samples the evaluator calls a one, with and without negating ones."""
    evaluator = shipped("evaluator").net
    lines = []
    for name, expr in (("model(\"digits\")", model("digits")),
                       ("model(\"digits\") / model(\"digits\", label=1) ** 0.5", model("digits") / model("digits", label=1) ** 0.5)):
        for sampler in ("reverse", "mala"):
            x = run(expr, sampler, n, seed=0).x.float().clamp(-1, 1)
            lines.append(f"| `{name}` | {sampler} | {float((evaluator.predict(x) == 1).float().mean()):.3f} |")
            print(lines[-1], flush=True)
    return lines


def tapestry(out: Path) -> None:
    """Labels 1, 2, 3 on overlapping 8x8 windows of an 8x20 canvas, by reverse diffusion and MALA."""
    windows = [(0, 8), (6, 14), (12, 20)]
    expr = crop(model("digits", label=1), rows=(0, 8), cols=windows[0])
    for label, cols in zip((2, 3), windows[1:]):
        expr = expr * crop(model("digits", label=label), rows=(0, 8), cols=cols)
    target = compile_expr(expr, canvas=(8, 20))
    shown = []
    for sampler in ("reverse", "mala"):
        result = sample(target, sampler=sampler, n=16, seed=0, **SAMPLERS[sampler])
        shown.append(SampleResult(result.x.clamp(-1, 1), result.diagnostics))
    figure = images_figure(expr, target, shown, "tapestry 1 | 2 | 3 on an 8x20 canvas (pixels clipped to [-1, 1])")
    save_figure(figure, out / "digits-tapestry.png")


def guidance_bias_2d(n: int) -> list[str]:
    """Table lines: mode weights of ``ring_left ** w / ring ** (w - 1)`` (exact oracles) under
    reverse diffusion and MALA against exact samples (:func:`rrrdsl.truth.exact_samples`)."""
    lines = []
    centres = ring_centers()
    for w in (2.0, 3.0):
        expr = oracle("ring_left") ** w / oracle("ring") ** (w - 1)
        runs: dict[str, Any] = {"exact": truth.exact_samples(expr, n, seed=1)}
        for sampler in ("reverse", "mala"):
            runs[sampler] = sample(compile_expr(expr), sampler=sampler, n=n, seed=0, progress=False).x
        for name, x in runs.items():
            weights = mode_weights(x, centres, RADIUS)[:4].tolist()
            lines.append(f"| {w:g} | {name} | " + " | ".join(f"{v:.3f}" for v in weights) + " |")
            print(lines[-1], flush=True)
    return lines


def main(args: argparse.Namespace, command: str) -> int:
    """Write ``digits.md`` and the ``digits-*.png`` figures under ``args.out``."""
    test_x, test_y = load_digits("test")
    train_x, _ = load_digits("train")
    evaluator = shipped("evaluator").net
    n_2d = 4000
    text = render(
        "digits",
        command=command,
        accuracy=f"{float((evaluator.predict(test_x) == test_y).float().mean()):.3f}",
        test_digits=len(test_x),
        floor=f"{evaluate(train_x, torch.zeros(len(train_x), dtype=torch.long), test_x)[1]:.2f}",
        guidance=guidance_rows(args.per_label, args.weights, test_x, args.out),
        negation=negation_rows(10 * args.per_label),
        n_2d=n_2d,
        bias=guidance_bias_2d(n_2d),
    )
    tapestry(args.out)
    print("wrote", write_report(args.out / "digits.md", text))
    return 0
