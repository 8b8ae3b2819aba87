"""``rrrdsl.sample``: one entry point for every sampler, with options checked before any work.

Samplers
--------
============  =================================================================================
``reverse``   DDPM ancestral reverse diffusion with the composed score (Ho et al., 2020); the
              biased baseline for products (Du et al., 2023)
``ddim``      DDIM reverse diffusion, ``eta`` in [0, 1] (Song et al., 2021)
``ula``       annealed ULA: a DDPM step between levels, then ``steps`` Langevin steps per level
``mala``      the same with Metropolis-adjusted Langevin (needs energies, or ``mh="line_integral"``)
``hmc``       the same with HMC (``leapfrog``, ``damping``, ``mh``)
``uha``       the same with unadjusted HMC (``leapfrog``, ``damping``)
``nuts``      the same with batched NUTS (``max_tree_depth``)
``smc``       SMC/AIS over the levels with exact weights, resampling and a log Z estimate;
              ``kernel`` names its MCMC move (default ``mala``)
============  =================================================================================

The default is ``smc`` when the target has energies. On a score-only target it is ``ula``:
it needs only scores, and unlike plain reverse diffusion its Langevin steps at every level
correct the product bias (up to the discretisation bias of an unadjusted kernel).

Defaults for steps per level, step sizes ``c * beta_t ** b`` and the levels that get MCMC are
in :data:`DEFAULTS`; they were measured on ``oracle("ring") * oracle("bar")`` at equal NFE
(at most 1000 per particle, ``benchmarks/bench_samplers.py``):

* the annealed kernels spend their budget on the **last ten levels** (many steps each, a plain
  reverse step everywhere else): at equal NFE this beat a few steps at every level (MMD / floor
  1.1 vs 2.7 for MALA), because the product bias of reverse diffusion is made at the low-noise
  levels, while mass stuck in a wrong mode at high noise cannot be moved by local MCMC anyway;
* ``hmc`` takes one leapfrog step per transition with partial momentum refresh (damping 0.5,
  Horowitz's generalised HMC): at equal NFE it beat 3 or 5 leapfrog steps with full refresh
  (MMD / floor about 1.0-1.4 vs 1.4-1.7);
* ``mala`` / ``hmc`` with ``mh="line_integral"`` (score-only targets) adapt toward acceptance
  0.9 instead of 0.57 / 0.65 (:data:`rrrdsl.samplers.line_integral.TARGET_ACCEPT`): the estimated
  test only sees the gradient-norm part of the discretisation error, and at the usual rates the
  steps grow until the rest dominates (``benchmarks/bench_line_integral.py``);
* ``smc`` runs MALA at every level and reverse-diffusion moves only into levels 10..89: at the
  top levels (``beta_t`` up to 0.999) a reverse step with a summed score is far from the
  noising kernel's reverse and its weights degenerate (log-weight std > 1 above level 95),
  and near level 0 the weights of a reverse move are noisier than those of a pure MCMC level.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch

from ..errors import SamplerError, suggest
from ..lang.ir import Expr
from .adapt import DEFAULT_STEP_SCHEDULE
from .annealed import AnnealedConfig, AnnealedResult, LevelDiagnostics, anneal
from .base import Target
from .diffusion import METHODS
from .smc import smc

#: kernel name -> "module:class" (imported when used)
KERNELS = {
    "ula": "rrrdsl.samplers.langevin:ULA",
    "mala": "rrrdsl.samplers.langevin:MALA",
    "hmc": "rrrdsl.samplers.hmc:HMC",
    "uha": "rrrdsl.samplers.hmc:UHA",
    "nuts": "rrrdsl.samplers.nuts:NUTS",
}
SAMPLERS = ("reverse", "ddim", *KERNELS, "smc")

#: the levels that get MCMC by default in the annealed samplers: the last ten (see module doc)
LAST_LEVELS = (0, 9)
#: per-sampler defaults (other kernel options are the kernels' own defaults); each annealed
#: sampler spends at most 1000 gradient evaluations per particle on a 100-level schedule
DEFAULTS: dict[str, dict[str, Any]] = {
    "reverse": {"reverse": "ddpm"},
    "ddim": {"reverse": "ddim", "eta": 0.0},
    "ula": {"steps": 90, "mcmc_levels": LAST_LEVELS},
    "mala": {"steps": 90, "mcmc_levels": LAST_LEVELS},
    "hmc": {"steps": 90, "leapfrog": 1, "damping": 0.5, "mcmc_levels": LAST_LEVELS},
    "uha": {"steps": 30, "leapfrog": 3, "mcmc_levels": LAST_LEVELS},
    "nuts": {"steps": 20, "max_tree_depth": 3, "mcmc_levels": LAST_LEVELS},
    "smc": {"kernel": "mala", "steps": 8, "reverse_levels": (10, 89)},
}

#: options every sampler takes, with their defaults
COMMON = {"progress": True, "device": "cpu", "dtype": torch.float32, "snapshots": ()}
#: options of the annealed walk (samplers with a kernel)
WALK = {
    "steps": 0,
    "reverse": "ddpm",
    "reverse_levels": None,
    "mcmc_levels": None,
    "step_size": None,
    "step_scale": None,
    "step_exponent": None,
    "adapt": True,
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class SampleResult:
    """Samples ``x`` (``[n, dim]``) and the run's ``diagnostics``.

    ``diagnostics`` holds ``sampler``, ``options`` (as resolved), ``levels`` (per-level
    :class:`~rrrdsl.samplers.annealed.LevelDiagnostics`: acceptance mean/min/max, step size,
    divergences, NFE, ESS, resampled), ``nfe`` (total gradient evaluations per particle),
    ``wall_time`` (seconds), ``log_z`` (SMC, else ``None``) and ``snapshots`` (level -> particles).
    """

    x: torch.Tensor
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: tensors become (nested) lists, NaN becomes ``None``."""
        return {"x": _plain(self.x), "diagnostics": _plain(self.diagnostics)}


def sample(
    expr_or_target: Union[Expr, Target],
    sampler: Optional[str] = None,
    n: int = 1000,
    seed: int = 0,
    **options: Any,
) -> SampleResult:
    """Draw ``n`` samples from the level-0 density of a composition.

    Parameters
    ----------
    expr_or_target
        An energy graph (compiled with :func:`rrrdsl.compile`) or an annealed target.
    sampler
        One of :data:`SAMPLERS`; default ``smc`` when the target has energies, else ``ula``.
    n
        Number of samples (particles / chains), ``>= 1``.
    seed
        Seed of the ``torch.Generator`` every random number comes from (same seed, same output).
    **options
        ``steps`` (kernel steps per level), ``mcmc_levels`` (``(lo, hi)`` inclusive, a
        ``range`` or a predicate of the level), ``step_size`` (a fixed step size at every level)
        or ``step_scale``/``step_exponent`` (``c``, ``b`` in ``c * beta_t ** b``), ``adapt``
        (dual averaging toward the kernel's target acceptance), ``reverse`` (``"ddpm"``,
        ``"ddim"`` or ``None``: the move between levels), ``eta`` (DDIM), the kernel's own
        options (``mh``, ``leapfrog``, ``damping``, ``max_tree_depth``), for SMC ``kernel`` and
        ``threshold`` (resample when ESS < threshold * n), and ``progress``, ``device``,
        ``dtype``, ``snapshots`` (levels whose particles to keep).

    Raises
    ------
    SamplerError
        Unknown sampler or option names (with the nearest names), out-of-range values, or a
        sampler that needs energies on a score-only target.
    """
    name = _sampler_name(sampler)
    _check_int("n", n, 1)
    _check_int("seed", seed, 0)
    if name is not None:  # everything but the target checks happens before compiling
        resolved, kernel_name, kernel = _prepare(name, options)
    else:
        _check_names(options, set().union(*(_allowed(s, s if s in KERNELS else None) for s in SAMPLERS)), "any sampler")
    if isinstance(expr_or_target, Expr):
        from ..compiler import compile as compile_expr

        target = compile_expr(expr_or_target)
    else:
        target = expr_or_target
    if name is None:
        name = "smc" if target.has_energy else "ula"
        resolved, kernel_name, kernel = _prepare(name, options)
    _check_target(name, kernel, target, resolved)
    config = _config(name, kernel_name, resolved)
    generator = torch.Generator(device=resolved["device"]).manual_seed(seed)
    progress = bool(resolved["progress"]) and sys.stderr.isatty()
    run = dict(dtype=resolved["dtype"], device=resolved["device"], progress=progress)
    start = time.perf_counter()
    with torch.no_grad():
        if name == "smc":
            result = smc(target, kernel, config, n, generator, threshold=resolved["threshold"], **run)
        else:
            result = anneal(target, kernel, config, n, generator, **run)
    wall_time = time.perf_counter() - start
    return SampleResult(result.x, _diagnostics(name, resolved, result, wall_time))


def check(target: Target, sampler: Optional[str] = None, **options: Any) -> str:
    """Validate ``sampler`` and its ``options`` against a compiled ``target`` without sampling.

    Raises :class:`SamplerError` exactly as :func:`sample` would before it starts; returns the
    resolved sampler name (the default when ``sampler`` is None).
    """
    name = _sampler_name(sampler) or ("smc" if target.has_energy else "ula")
    resolved, _, kernel = _prepare(name, options)
    _check_target(name, kernel, target, resolved)
    return name


def _sampler_name(sampler: Optional[str]) -> Optional[str]:
    if sampler is None or sampler in SAMPLERS:
        return sampler
    raise SamplerError(
        f"unknown sampler {sampler!r}", hint=suggest(str(sampler), SAMPLERS) or "known: " + ", ".join(SAMPLERS)
    )


def _kernel_class(kernel_name: str) -> type:
    module, cls = KERNELS[kernel_name].split(":")
    return getattr(importlib.import_module(module), cls)


def _kernel_options(kernel_name: Optional[str]) -> list[str]:
    """The keyword options a kernel's constructor takes."""
    if kernel_name is None:
        return []
    parameters = inspect.signature(_kernel_class(kernel_name)).parameters.values()
    return [p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _allowed(name: str, kernel_name: Optional[str]) -> dict[str, Any]:
    """Option names a sampler accepts, with their defaults (``None``: the kernel's own)."""
    allowed = dict(COMMON)
    if name in ("reverse", "ddim"):
        allowed["eta"] = 1.0
    else:
        allowed.update(WALK, eta=1.0)
        allowed.update({option: None for option in _kernel_options(kernel_name)})
    if name == "smc":
        allowed.update(kernel="mala", threshold=0.5)
    allowed.update(DEFAULTS[name])
    return allowed


def _prepare(name: str, options: dict[str, Any]) -> tuple[dict[str, Any], Optional[str], Any]:
    """Resolved options, the kernel's name and the kernel itself (its constructor checks its options)."""
    resolved = _resolve_options(name, options)
    kernel_name = resolved.get("kernel", name if name in KERNELS else None)
    kernel = _make_kernel(kernel_name, resolved) if kernel_name is not None else None
    return resolved, kernel_name, kernel


def _resolve_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check option names and ranges (no work done yet) and fill in the defaults."""
    kernel_name = options.get("kernel", DEFAULTS["smc"]["kernel"]) if name == "smc" else name
    if name == "smc" and kernel_name is not None and kernel_name not in KERNELS:
        raise SamplerError(
            f"unknown SMC kernel {kernel_name!r}", hint=suggest(str(kernel_name), KERNELS) or "known: " + ", ".join(KERNELS)
        )
    allowed = _allowed(name, kernel_name if name != "reverse" else None)
    _check_names(options, allowed, f"sampler {name!r}")
    resolved = {**allowed, **options}
    _check_int("steps", resolved.get("steps", 0), 0)
    for key in ("step_size", "step_scale"):
        if resolved.get(key) is not None:
            _check_positive(key, resolved[key])
    if resolved.get("step_exponent") is not None and not _finite(resolved["step_exponent"]):
        raise SamplerError(f"option 'step_exponent' must be a finite number, got {resolved['step_exponent']!r}")
    _check_unit("eta", resolved["eta"])
    if "threshold" in resolved:
        _check_unit("threshold", resolved["threshold"])
    if resolved.get("reverse") not in (*METHODS, None):
        raise SamplerError(
            f"option 'reverse' must be one of 'ddpm', 'ddim' or None, got {resolved['reverse']!r}",
            hint=suggest(str(resolved["reverse"]), METHODS),
        )
    dtype = resolved["dtype"]
    resolved["dtype"] = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if resolved["dtype"] not in DTYPES.values():
        raise SamplerError(f"option 'dtype' must be float32 or float64, got {dtype!r}")
    try:
        resolved["device"] = torch.device(resolved["device"])
    except (RuntimeError, TypeError) as error:
        raise SamplerError(f"option 'device': {error}") from None
    for key in ("mcmc_levels", "reverse_levels"):
        levels = resolved.get(key)
        if not (levels is None or isinstance(levels, range) or callable(levels) or _is_pair(levels)):
            raise SamplerError(
                f"option {key!r} must be None, an inclusive pair (lo, hi), a range or a predicate, got {levels!r}"
            )
    if not all(isinstance(t, int) for t in resolved["snapshots"]):
        raise SamplerError(f"option 'snapshots' must be a sequence of integer levels, got {resolved['snapshots']!r}")
    resolved["snapshots"] = tuple(resolved["snapshots"])
    return resolved


def _check_target(name: str, kernel: Any, target: Target, resolved: dict[str, Any]) -> None:
    """Checks that need the target: energies, level ranges."""
    last = target.num_levels - 1
    pairs = [resolved.get(key) for key in ("mcmc_levels", "reverse_levels") if _is_pair(resolved.get(key))]
    for t in (*(t for pair in pairs for t in pair), *resolved["snapshots"]):
        if not 0 <= t <= last:
            raise SamplerError(f"level {t} is outside 0..{last} (the target has {target.num_levels} levels)")
    if name == "smc" and not target.has_energy:
        raise SamplerError(
            "sampler 'smc' needs log densities for its importance weights, but the target is score-only",
            hint="use 'ula', 'uha' or 'reverse', or models with energies",
        )
    if kernel is not None and kernel.needs_energy and not target.has_energy:
        hint = (
            "pass mh='line_integral' to estimate energy differences from the score"
            if "mh" in _kernel_options(kernel.name)
            else "use 'mala' or 'hmc' with mh='line_integral', or the unadjusted 'ula' / 'uha'"
        )
        raise SamplerError(
            f"kernel {kernel.name!r} needs log densities for its Metropolis test (mh='exact'), "
            "but the target is score-only",
            hint=hint,
        )


def _make_kernel(kernel_name: str, resolved: dict[str, Any]) -> Any:
    """Build the kernel from its options (its constructor validates their ranges)."""
    options = {k: resolved[k] for k in _kernel_options(kernel_name) if resolved.get(k) is not None}
    return _kernel_class(kernel_name)(**options)


def _config(name: str, kernel_name: Optional[str], resolved: dict[str, Any]) -> AnnealedConfig:
    """The annealed-walk configuration; step sizes from the options or the kernel's defaults."""
    c, b = DEFAULT_STEP_SCHEDULE.get(kernel_name, (1.0, 1.0))
    if resolved.get("step_size") is not None:
        c, b = resolved["step_size"], 0.0
    else:
        c = c if resolved.get("step_scale") is None else resolved["step_scale"]
        b = b if resolved.get("step_exponent") is None else resolved["step_exponent"]
    return AnnealedConfig(
        steps=resolved.get("steps", 0),
        reverse=resolved["reverse"],
        reverse_levels=resolved.get("reverse_levels"),
        eta=resolved["eta"],
        mcmc_levels=resolved.get("mcmc_levels"),
        step_scale=c,
        step_exponent=b,
        adapt=resolved.get("adapt", True),
        snapshots=resolved["snapshots"],
    )


def _diagnostics(name: str, resolved: dict[str, Any], result: AnnealedResult, wall_time: float) -> dict[str, Any]:
    levels: LevelDiagnostics = result.levels
    options = {k: (v if not callable(v) or isinstance(v, range) else repr(v)) for k, v in resolved.items()}
    options.update(dtype=str(resolved["dtype"]).replace("torch.", ""), device=str(resolved["device"]))
    return {
        "sampler": name,
        "options": options,
        "levels": levels,
        "nfe": float(levels.nfe.sum()),
        "wall_time": wall_time,
        "log_z": result.log_z,
        "snapshots": result.snapshots,
    }


def _plain(value: Any) -> Any:
    """Tensors, ranges, tuples and NaN made JSON-ready."""
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if hasattr(value, "_asdict"):  # a NamedTuple such as LevelDiagnostics
        return _plain(value._asdict())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, range):
        return [value.start, value.stop, value.step]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _check_names(options: dict[str, Any], allowed, where: str) -> None:
    for key in options:
        if key not in allowed:
            hint = suggest(key, allowed) or "known options: " + ", ".join(sorted(allowed))
            raise SamplerError(f"unknown option {key!r} for {where}", hint=hint)


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SamplerError(f"option {key!r} must be an integer >= {minimum}, got {value!r}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_positive(key: str, value: Any) -> None:
    if not _finite(value) or value <= 0:
        raise SamplerError(f"option {key!r} must be a finite number > 0, got {value!r}")


def _check_unit(key: str, value: Any) -> None:
    if not _finite(value) or not 0 <= value <= 1:
        raise SamplerError(f"option {key!r} must be a number in [0, 1], got {value!r}")


def _is_pair(levels: Any) -> bool:
    return isinstance(levels, tuple) and len(levels) == 2 and all(isinstance(t, int) for t in levels)
