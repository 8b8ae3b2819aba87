"""Guidance, negation and tapestries on 8×8 digits, judged by an independent classifier.

For every label k = 0..9 and guidance weight w, two guided targets are sampled at (about)
equal NFE per particle with reverse diffusion (DDPM), unadjusted annealed Langevin (ULA) and
the Metropolis-corrected samplers (MALA, HMC, SMC with MALA moves):

* classifier guidance       ``model("digits") * classifier("digits", label=k) ** w``
  (Dhariwal & Nichol, 2021);
* classifier-free guidance  ``model("digits", label=k) ** w / model("digits") ** (w - 1)``
  (Ho & Salimans, 2022), the product form of Du et al. (2023).

Metrics (the evaluator of :mod:`rrrdsl.zoo.digits`, trained on clean digits of another
split, seed and architecture than the guidance classifier): accuracy for the requested label
and the Fréchet distance (Heusel et al., 2017) of its features to the held-out test digits.
The guidance classifier's own mean ``p(y = k | x)`` at level 0 is reported beside them: it
tells a sampler that follows the classifier harder than the product density does (reverse
diffusion with summed scores) from one that samples the product. Negation
``model("digits") / model("digits", label=1) ** 0.5`` is compared with
``model("digits")`` by the fraction of samples the evaluator calls a one. Writes
``benchmarks/results/digits.md`` and ``digits-*.png``::

    python benchmarks/bench_digits.py [--per-label 30] [--weights 1 2 3]

A 2D check with exact truth explains the direction of the guidance results: on the
classifier-free-guidance-shaped ``oracle("ring_left") ** w / oracle("ring") ** (w - 1)``
(four equal modes), the weights of the modes under reverse diffusion, MALA and exact samples.

Findings written by hand from a run are kept apart, in ``benchmarks/results/digits-findings.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rrrdsl import compile, sample, truth
from rrrdsl.bench import ring_centers
from rrrdsl.files import write_atomic
from rrrdsl.lang.ir import classifier, crop, model, oracle
from rrrdsl.metrics import frechet_distance, mode_weights
from rrrdsl.plot import IMAGE_GRID, images_figure, save_figure
from rrrdsl.samplers.api import SampleResult
from rrrdsl.zoo.digits.data import load as load_digits
from rrrdsl.zoo.digits.loading import shipped

RESULTS = Path(__file__).resolve().parent / "results"
#: samples shown per label in the grids (the helper shows IMAGE_GRID**2 images)
GRID = IMAGE_GRID * IMAGE_GRID // 10
#: sampler -> options; the MCMC budget sits on the last ten levels, as in the 2D benchmarks
SAMPLERS = {
    "reverse": {},
    "ula": {"steps": 30, "mcmc_levels": (0, 9)},
    "mala": {"steps": 30, "mcmc_levels": (0, 9)},
    "hmc": {"steps": 30, "mcmc_levels": (0, 9)},
    "smc": {"steps": 3, "reverse_levels": (10, 99)},
}


def guided(mode: str, label: int, w: float):
    if mode == "classifier guidance":
        return model("digits") * classifier("digits", label=label) ** w
    return model("digits", label=label) ** w / model("digits") ** (w - 1)


def run(expr, sampler: str, n: int, seed: int):
    return sample(compile(expr, canvas=(8, 8)), sampler=sampler, n=n, seed=seed, **SAMPLERS[sampler])


def evaluate(x: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-label", type=int, default=30)
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    RESULTS.mkdir(exist_ok=True)
    test_x, test_y = load_digits("test")
    train_x, _ = load_digits("train")
    evaluator = shipped("evaluator").net
    lines = [
        "# Digits: guidance, negation, tapestry",
        "",
        f"`python benchmarks/bench_digits.py --per-label {args.per_label} --weights {' '.join(map(str, args.weights))}` "
        "(1 torch thread). Evaluator: clean-digit ReLU MLP on the `evaluator` split; "
        f"test accuracy {float((evaluator.predict(test_x) == test_y).float().mean()):.3f}. "
        f"Reference: the {len(test_x)} held-out test digits. Floor: the training digits score FD "
        f"{evaluate(train_x, torch.zeros(len(train_x), dtype=torch.long), test_x)[1]:.2f}.",
        "",
        "accuracy and FD: the evaluator on samples clipped to [-1, 1]; guide p(y|x): the guidance classifier's "
        "mean probability of the requested label at level 0.",
        "",
        "| guidance | w | sampler | NFE/particle | accuracy | FD | guide p(y|x) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("classifier guidance", "classifier-free guidance"):
        for w in args.weights:
            for sampler in SAMPLERS:
                xs, ys, nfe, start, grid = [], [], 0.0, time.perf_counter(), []
                for label in range(10):
                    result = run(guided(mode, label, w), sampler, args.per_label, seed=label)
                    xs.append(result.x)
                    ys.append(torch.full((args.per_label,), label))
                    nfe = result.diagnostics["nfe"]
                    grid.append(result.x[:GRID])
                accuracy, fd = evaluate(torch.cat(xs), torch.cat(ys), test_x)
                confidence = guide_confidence(torch.cat(xs), torch.cat(ys))
                seconds = time.perf_counter() - start
                lines.append(f"| {mode} | {w:g} | {sampler} | {nfe:.0f} | {accuracy:.3f} | {fd:.2f} | {confidence:.3f} | {seconds:.0f} |")
                print(lines[-1], flush=True)
                if w == args.weights[-1] and sampler in ("reverse", "mala"):
                    shown = SampleResult(torch.cat(grid).clamp(-1, 1), result.diagnostics)
                    _grid(shown, f"{mode}, w={w:g}, {sampler}: labels 0..9, {GRID} each", f"digits-{mode.split()[0]}-{sampler}.png")
    lines += ["", "## Negation", "", "| target | sampler | fraction called a one |", "|---|---|---|"]
    n = 10 * args.per_label
    for name, expr in (("model(\"digits\")", model("digits")), ("model(\"digits\") / model(\"digits\", label=1) ** 0.5", model("digits") / model("digits", label=1) ** 0.5)):
        for sampler in ("reverse", "mala"):
            x = run(expr, sampler, n, seed=0).x.float().clamp(-1, 1)
            lines.append(f"| `{name}` | {sampler} | {float((evaluator.predict(x) == 1).float().mean()):.3f} |")
            print(lines[-1], flush=True)
    windows = [(0, 8), (6, 14), (12, 20)]
    tapestry = crop(model("digits", label=1), rows=(0, 8), cols=windows[0])
    for label, cols in zip((2, 3), windows[1:]):
        tapestry = tapestry * crop(model("digits", label=label), rows=(0, 8), cols=cols)
    target = compile(tapestry, canvas=(8, 20))
    shown = []
    for sampler in ("reverse", "mala"):
        result = sample(target, sampler=sampler, n=16, seed=0, **SAMPLERS[sampler])
        shown.append(SampleResult(result.x.clamp(-1, 1), result.diagnostics))
    figure = images_figure(tapestry, target, shown, "tapestry 1 | 2 | 3 on an 8x20 canvas (pixels clipped to [-1, 1])")
    save_figure(figure, RESULTS / "digits-tapestry.png")
    lines += ["", "Tapestry (labels 1, 2, 3 on overlapping windows of an 8×20 canvas): `digits-tapestry.png`."]
    lines += ["", *guidance_bias_2d(n=4000)]
    write_atomic(RESULTS / "digits.md", ("\n".join(lines) + "\n").encode())
    print("wrote", RESULTS / "digits.md")


def guidance_bias_2d(n: int) -> list[str]:
    """Markdown lines: mode weights of ``ring_left ** w / ring ** (w - 1)`` (exact oracles) under
    reverse diffusion and MALA against exact samples (:func:`rrrdsl.truth.exact_samples`)."""
    lines = [
        "## Guidance with exact truth (2D)",
        "",
        f'`oracle("ring_left") ** w / oracle("ring") ** (w - 1)`: weight of each of the four guided ring modes '
        f"(modes 1 and 2 lie inside the guided arc, 0 and 3 at its ends), N = {n}, sampler defaults. The exact "
        "target keeps the four modes equal at every w.",
        "",
        "| w | samples | mode 0 | mode 1 | mode 2 | mode 3 |",
        "|---|---|---|---|---|---|",
    ]
    centres = ring_centers()
    for w in (2.0, 3.0):
        expr = oracle("ring_left") ** w / oracle("ring") ** (w - 1)
        runs = {"exact": truth.exact_samples(expr, n, seed=1)}
        for sampler in ("reverse", "mala"):
            runs[sampler] = sample(compile(expr), sampler=sampler, n=n, seed=0, progress=False).x
        for name, x in runs.items():
            weights = mode_weights(x, centres, 0.1)[:4].tolist()
            lines.append(f"| {w:g} | {name} | " + " | ".join(f"{v:.3f}" for v in weights) + " |")
            print(lines[-1], flush=True)
    return lines


def _grid(result: SampleResult, title: str, name: str) -> None:
    """An image grid of ``result.x`` ``[K, 64]`` with the shared plotting helper."""
    expr = model("digits")
    save_figure(images_figure(expr, compile(expr, canvas=(8, 8)), [result], title), RESULTS / name)


if __name__ == "__main__":
    main()
