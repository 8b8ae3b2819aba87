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
              ``kernel`` names its MCMC move (default ``mala``): ``mala``, ``hmc`` or ``nuts``
              with ``mh="exact"``, or ``None`` (the moves whose weights are exact);
              ``levels="adaptive"`` (default) picks the levels by the conditional ESS
              (:mod:`rrrdsl.samplers.levels`), ``"schedule"`` walks every level
============  =================================================================================

A mixture's components that are not exactly normalised get their per-level normalisers
estimated before the run (:mod:`rrrdsl.samplers.normalisers`; cached, reported in
``diagnostics["normalisers"]``), so its weights mean what they say.

The default is ``smc`` when the target has energies. On a score-only target it is ``ula``:
it needs only scores, and unlike plain reverse diffusion its Langevin steps at every level
correct the product bias (up to the discretisation bias of an unadjusted kernel).

This module holds no sampler knowledge of its own: it reads a table. Each kernel class in
:data:`KERNELS` carries its options dataclass (``Options``: defaults, allowed ranges, target
acceptance) and the :class:`~rrrdsl.samplers.base.AnnealedDefaults` of the annealed sampler of
its name (steps per level, step size ``c * beta_t ** b``, levels with MCMC, kernel options),
each with where it was measured; :mod:`rrrdsl.samplers.diffusion` and :mod:`rrrdsl.samplers.smc`
hold the defaults of ``reverse``/``ddim`` and ``smc``. Every check is worded by
:mod:`rrrdsl.samplers.options`. An expression is compiled here and nowhere below.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import fields
from collections.abc import Collection
from typing import Any, Optional, Union

import torch
from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm

from ..compiler import compile as compile_expr
from ..errors import SamplerError
from ..lang.ir import Expr
from .annealed import AnnealedConfig, ProgressBar, anneal, in_level_set
from .base import OptionsKernel, Target
from .diffusion import ETA, REVERSE_DEFAULTS, check_reverse
from .distributed import current, failing_together
from .hmc import HMC, UHA
from .langevin import MALA, ULA
from .normalisers import check_estimates, normalise
from .nuts import NUTS
from .options import check_choice, check_int, check_known, check_names, check_real, fail
from .result import SampleResult, diagnostics, pooled
from .smc import ADAPTIVE_STEPS, RESAMPLING, RESAMPLINGS, SMC_DEFAULTS, THRESHOLD, check_levels, check_moves, smc

#: kernel name -> kernel class (with its ``Options`` and ``annealed`` defaults)
KERNELS: dict[str, type[OptionsKernel]] = {k.name: k for k in (ULA, MALA, HMC, UHA, NUTS)}
SAMPLERS = ("reverse", "ddim", *KERNELS, "smc")

#: per-sampler defaults beyond :data:`COMMON`, :data:`WALK` and the kernels' own options, read
#: from the modules that measured them; each annealed sampler spends at most 1000 gradient
#: evaluations per particle on a 100-level schedule
DEFAULTS: dict[str, dict[str, Any]] = {
    **REVERSE_DEFAULTS,
    **{name: kernel.annealed.as_options() for name, kernel in KERNELS.items()},
    "smc": SMC_DEFAULTS,
}

#: options every sampler takes, with their defaults; ``allow_nonfinite`` is recorded in the
#: diagnostics and read by ``rrr run``, which exits 1 on non-finite samples unless it is true
COMMON = {"progress": True, "device": "cpu", "dtype": torch.float32, "snapshots": (), "allow_nonfinite": False}
#: largest ``n``: 10 million particles (a 2D run of that size needs about 3 GB)
MAX_N = 10_000_000
#: largest ``seed``: it must fit the 64 bits of ``torch.Generator.manual_seed``
MAX_SEED = 2**64 - 1
#: largest ``steps`` per level: 10,000 (a million gradient evaluations per particle on 100 levels)
MAX_STEPS = 10_000
#: most gradient evaluations per particle: steps x MCMC levels x the kernel's evaluations per step
#: (``leapfrog``; ``2^max_tree_depth - 1`` for NUTS), e.g. ``MAX_STEPS`` single-gradient steps on 100 levels
MAX_NFE = 1_000_000
#: particle-sized tensors alive at once in a kernel step (state, gradient, proposal, momentum,
#: their log densities and scratch space), beyond the kept snapshots; a generous count
WORKING_COPIES = 24
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


def sample(
    expr_or_target: Union[Expr, Target],
    sampler: Optional[str] = None,
    n: int = 1000,
    seed: int = 0,
    **options: Any,
) -> SampleResult:
    """Draw ``n`` samples from the level-0 density of a composition (and, for latent models,
    decode them once at the end: :attr:`SampleResult.images`).

    Parameters
    ----------
    expr_or_target
        An energy graph (compiled with :func:`rrrdsl.compile`) or an annealed target.
    sampler
        One of :data:`SAMPLERS`; default ``smc`` when the target has energies, else ``ula``.
    n
        Number of samples (particles / chains), ``>= 1``. Under ``torchrun`` each process
        samples its shard (:mod:`rrrdsl.samplers.distributed`): rank 0 gets all ``n`` samples
        (and snapshots), every other rank only the rows of its own shard
        (``rrrdsl.samplers.distributed.current().shard(n)``); the diagnostics (pooled over
        every particle) are the same on every rank.
    seed
        Seed of the ``torch.Generator`` every random number comes from (same seed, same output;
        with several processes, each derives its own from ``(seed, rank)``).
    **options
        ``steps`` (kernel steps per level), ``mcmc_levels`` (``(lo, hi)`` inclusive, a
        ``range`` or a predicate of the level), ``step_size`` (a fixed step size at every level)
        or ``step_scale``/``step_exponent`` (``c``, ``b`` in ``c * beta_t ** b``), ``adapt``
        (dual averaging toward the kernel's target acceptance), ``reverse`` (``"ddpm"``,
        ``"ddim"`` or ``None``: the move between levels), ``eta`` (DDIM), the kernel's own
        options (``mh``, ``leapfrog``, ``damping``, ``max_tree_depth``), for SMC ``kernel``,
        ``threshold`` (resample when ESS < threshold * n), ``resampling`` (``"hilbert"``, the
        default, or ``"systematic"``: :mod:`rrrdsl.samplers.ordering`), ``levels`` (``"adaptive"`` or
        ``"schedule"``) and the adaptive walk's ``ess``, ``budget``, ``oversample`` and ``pilot``, and ``progress`` (a bar
        over the levels where one can be seen: :func:`progress_bar`), ``device``, ``dtype``,
        ``snapshots`` (levels whose particles to keep).

    Raises
    ------
    SamplerError
        Unknown sampler or option names (with the nearest names), out-of-range values, a
        sampler that needs energies on a score-only target, or memory running out while
        sampling (with several processes: the first error of any of them).
    """
    name = _sampler_name(sampler)
    check_n(n)
    check_seed(seed)
    if name is not None:  # everything but the target checks happens before compiling
        resolved, kernel = _prepare(name, options)
    else:
        check_names(options, set().union(*(_allowed(s, KERNELS.get(s)) for s in SAMPLERS)), "any sampler")
    target = compile_expr(expr_or_target) if isinstance(expr_or_target, Expr) else expr_or_target
    if name is None:
        name = "smc" if target.has_energy else "ula"
        resolved, kernel = _prepare(name, options)
    _check_target(name, kernel, target, resolved, options)
    with failing_together() as group:
        shard = len(group.shard(n))
        check_memory(target, shard, resolved)
        check_work(target, kernel, resolved, options)
        check_estimates(target)
        config = _config(kernel, resolved)
        device = group.device(resolved["device"])
        normalisers = normalise(target, device)
        generator = torch.Generator(device=device).manual_seed(group.seed(seed))
        progress = progress_bar() if resolved["progress"] and group.rank == 0 else None
        run = dict(dtype=resolved["dtype"], device=device, progress=progress)
        start = time.perf_counter()
        try:
            with torch.no_grad():
                if name == "smc":
                    levels = check_levels(options, resolved, kernel)
                    result = smc(target, kernel, config, shard, generator, threshold=resolved["threshold"], resampling=resolved["resampling"], levels=levels, **run)
                else:
                    result = anneal(target, kernel, config, shard, generator, **run)
                decoder = getattr(target, "decoder", None)  # a latent model's (a target of the protocol may have none)
                images = decoder.decode(result.x) if decoder is not None else None  # once, after the walk
        except (MemoryError, torch.OutOfMemoryError) as error:
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise SamplerError(
                f"out of memory while sampling {shard} of n={n} particles on {device}: {detail}",
                hint="sample fewer particles per run, or share them among more processes (torchrun)",
            ) from None
        wall_time = time.perf_counter() - start
        nonfinite_rows = int(group.sum(torch.tensor([float((~torch.isfinite(result.x)).any(dim=1).sum())]))[0])
        result = pooled(result, group)
        images = None if images is None else group.gather(images.to(result.x.device)).cpu()  # NCCL gathers on the GPU
        record = diagnostics(name, resolved, result, float(group.extreme(torch.tensor([wall_time]), "max")[0]))
    record["nonfinite_rows"] = nonfinite_rows
    record["processes"] = group.world
    record["normalisers"] = {str(term): normaliser._asdict() for term, normaliser in normalisers.items()}
    return SampleResult(result.x, record, images)


def progress_bar() -> Optional[ProgressBar]:
    """The bar a run with ``progress=True`` shows over its levels, where one can be seen.

    tqdm's text bar when ``sys.stderr`` is a terminal; inside a Jupyter kernel with ipywidgets,
    the notebook widget that ``tqdm.auto`` chose there (the kernel's stderr is no terminal);
    otherwise none, and nothing is written to stderr.
    """
    if sys.stderr.isatty():
        return tqdm
    notebook = sys.modules.get("tqdm.notebook")  # imported by tqdm.auto inside a Jupyter kernel
    return auto_tqdm if notebook is not None and issubclass(auto_tqdm, notebook.tqdm) else None


def check(target: Target, sampler: Optional[str] = None, n: int = 1000, **options: Any) -> str:
    """Validate ``sampler``, ``n`` and the ``options`` against a compiled ``target`` without
    sampling (the seed is checked apart: :func:`check_seed`).

    Raises :class:`SamplerError` exactly as :func:`sample` would before it starts; returns the
    resolved sampler name (the default when ``sampler`` is None).
    """
    check_n(n)
    name = _sampler_name(sampler) or ("smc" if target.has_energy else "ula")
    resolved, kernel = _prepare(name, options)
    _check_target(name, kernel, target, resolved, options)
    check_memory(target, len(current().shard(n)), resolved)
    check_work(target, kernel, resolved, options)
    check_estimates(target)
    return name


def check_n(n: Any) -> int:
    """A number of samples of :func:`sample`: an integer in ``1..MAX_N``."""
    return check_int("n", n, 1, MAX_N)


def check_seed(seed: Any) -> int:
    """A seed of :func:`sample`: an integer in ``0..MAX_SEED``."""
    return check_int("seed", seed, 0, MAX_SEED)


def check_memory(target: Target, n: int, resolved: dict[str, Any]) -> None:
    """Refuse a run whose ``n`` particles (of one process; times ``oversample`` on SMC's adaptive
    walk, or its pilot walk's share when larger) cannot fit: ``n * dim`` numbers times
    (:data:`WORKING_COPIES` + kept snapshots) against the memory of the device (the machine's
    physical memory for the CPU, the GPU's for CUDA)."""
    itemsize = torch.empty((), dtype=resolved["dtype"]).element_size()
    if resolved.get("levels") == "adaptive":  # the walk carries ``oversample`` particles per returned one
        n = max(n * resolved["oversample"], -(-resolved["pilot"] // current().world))  # the pilot walks first
    needed = n * target.dim * itemsize * (WORKING_COPIES + len(resolved["snapshots"]))
    available = _device_memory(resolved["device"])
    if available is not None and needed > available:
        raise SamplerError(
            f"n={n:,} particles of dimension {target.dim} need about {needed / 2**30:.1f} GiB, "
            f"more than the {available / 2**30:.1f} GiB of {resolved['device']}",
            hint="sample fewer particles (several runs with different seeds give more)",
        )


def check_work(target: Target, kernel: Optional[OptionsKernel], resolved: dict[str, Any], given: Collection[str] = ()) -> None:
    """Refuse a run whose MCMC costs more than :data:`MAX_NFE` gradient evaluations per particle
    (``steps`` x levels in ``mcmc_levels`` x the kernel's ``step_nfe`` x its line integral's
    ``quadrature_cost``, an upper bound), placed at
    the first of the kernel's options, ``steps`` or ``mcmc_levels`` among the ``given`` ones."""
    if kernel is None:
        return
    per_step = kernel.options.step_nfe * getattr(kernel.options, "quadrature_cost", 1)
    steps = resolved.get("steps", 0)
    levels = sum(1 for t in range(target.num_levels) if in_level_set(t, resolved.get("mcmc_levels")))
    nfe = steps * levels * per_step
    if nfe > MAX_NFE:
        error = SamplerError(
            f"{steps:,} steps at each of {levels} levels, of up to {per_step:,} gradient evaluations each, "
            f"cost {nfe:,} gradient evaluations per particle, more than the {MAX_NFE:,} allowed",
            hint="fewer steps or MCMC levels, fewer leapfrog steps, or a smaller max_tree_depth",
        )
        error.option = next((o for o in (*(f.name for f in fields(kernel.Options)), "steps", "mcmc_levels") if o in given), None)
        raise error


def _device_memory(device: torch.device) -> Optional[int]:
    """Bytes of memory of ``device``, or None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def defaults(sampler: str) -> dict[str, Any]:
    """Every option of ``sampler`` with its resolved default, as ``diagnostics["options"]`` holds
    them for a run without options (``None``: the kernel's own default, or the kernel's step size)."""
    return _resolve_options(_sampler_name(sampler), {})


def _sampler_name(sampler: Optional[str]) -> Optional[str]:
    if sampler is not None:
        check_known("sampler", sampler, SAMPLERS)
    return sampler


def _allowed(name: str, kernel: Optional[type[OptionsKernel]]) -> dict[str, Any]:
    """Option names a sampler accepts, with their defaults (``None``: the kernel's own)."""
    allowed: dict[str, Any] = dict(COMMON)
    if name in REVERSE_DEFAULTS:
        allowed["eta"] = ETA
    else:
        allowed.update(WALK, eta=ETA)
        allowed.update({f.name: None for f in fields(kernel.Options)} if kernel is not None else {})
    if name == "smc":
        allowed.update(kernel=SMC_DEFAULTS["kernel"], threshold=THRESHOLD, resampling=RESAMPLING)
    allowed.update(DEFAULTS[name])
    return allowed


def _prepare(name: str, options: dict[str, Any]) -> tuple[dict[str, Any], Optional[OptionsKernel]]:
    """Resolved options and the kernel (whose options dataclass checks their ranges), or ``None``."""
    resolved = _resolve_options(name, options)
    kernel_class = KERNELS.get(resolved.get("kernel", name))
    kernel = None
    if kernel_class is not None:
        chosen = {f.name: resolved[f.name] for f in fields(kernel_class.Options) if resolved[f.name] is not None}
        kernel = kernel_class(**chosen)
        cost = getattr(kernel.options, "quadrature_cost", 1)
        if "steps" not in options and cost > 1:  # the default budget holds whatever the quadrature
            resolved["steps"] = max(1, resolved["steps"] // cost)
    if name == "smc":
        check_moves(kernel, resolved["reverse"], resolved["eta"])
        check_levels(options, resolved, kernel)
    return resolved, kernel


def _resolve_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check option names and ranges (no work done yet) and fill in the defaults."""
    kernel_name = options.get("kernel", SMC_DEFAULTS["kernel"]) if name == "smc" else name
    if name == "smc":
        check_choice("kernel", kernel_name, (*KERNELS, None))
    allowed = _allowed(name, KERNELS.get(kernel_name))
    check_names(options, allowed, f"sampler {name!r}")
    resolved = {**allowed, **options}
    if name == "smc" and resolved["levels"] == "adaptive" and "steps" not in options:
        resolved["steps"] = ADAPTIVE_STEPS
    check_int("steps", resolved.get("steps", 0), 0, MAX_STEPS)
    for key in ("allow_nonfinite", "adapt", "progress"):
        if key in resolved and not isinstance(resolved[key], bool):
            fail(key, "true or false", resolved[key])
    for key in ("step_size", "step_scale"):  # as floats: an integer of 300 digits overflows torch
        if resolved.get(key) is not None:
            resolved[key] = check_real(key, resolved[key], 0.0, closed=(False, True))
    if resolved.get("step_exponent") is not None:
        resolved["step_exponent"] = check_real("step_exponent", resolved["step_exponent"])
    check_reverse(resolved.get("reverse"), resolved["eta"])
    if "threshold" in resolved:
        resolved["threshold"] = check_real("threshold", resolved["threshold"], 0.0, 1.0)
        check_choice("resampling", resolved["resampling"], RESAMPLINGS)
    dtype = resolved["dtype"]
    resolved["dtype"] = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if resolved["dtype"] not in DTYPES.values():
        fail("dtype", "one of 'float32' or 'float64'", dtype)
    try:
        resolved["device"] = torch.device(resolved["device"])
    except (RuntimeError, TypeError) as error:
        fail("device", "a torch device", resolved["device"], hint=str(error))
    device = resolved["device"]
    if device.type == "cuda" and not torch.cuda.is_available():
        fail("device", "an available device ('cpu' here: CUDA is not available)", str(device))
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        fail("device", f"a GPU of this machine (cuda:0..cuda:{torch.cuda.device_count() - 1})", str(device))
    if device.type not in ("cpu", "cuda"):
        fail("device", "'cpu' or 'cuda'", str(device))
    for key in ("mcmc_levels", "reverse_levels"):
        levels = resolved.get(key)
        if not (levels is None or isinstance(levels, range) or callable(levels) or _is_pair(levels)):
            fail(key, "None, an inclusive pair (lo, hi), a range or a predicate", levels)
        if _is_pair(levels) and levels[0] > levels[1]:
            fail(key, "an inclusive pair (lo, hi) with lo <= hi", levels, hint=f"did you mean {list(levels[::-1])}?")
    if not all(isinstance(t, int) for t in resolved["snapshots"]):
        fail("snapshots", "a sequence of integer levels", resolved["snapshots"])
    resolved["snapshots"] = tuple(resolved["snapshots"])
    return resolved


def _check_target(name: str, kernel: Optional[OptionsKernel], target: Target, resolved: dict[str, Any], given: Collection[str]) -> None:
    """Checks that need the target: energies, level ranges. A default level range (not in
    ``given``) is cut to the target's levels, so a short schedule (``levels=8``) runs with the
    sampler's defaults."""
    last = target.num_levels - 1
    for key in ("mcmc_levels", "reverse_levels"):
        value = resolved.get(key)
        if key not in given and _is_pair(value) and value[1] > last:
            resolved[key] = (min(value[0], last), last)
    adaptive = name == "smc" and resolved["levels"] == "adaptive"  # no level sets: SCHEDULE_ONLY
    for key in ("snapshots",) if adaptive else ("mcmc_levels", "reverse_levels", "snapshots"):
        value = resolved.get(key)
        for t in value if key == "snapshots" else value if _is_pair(value) else ():
            if not 0 <= t <= last:
                fail(key, f"levels in 0..{last} (the target has {target.num_levels} levels)", value, hint=f"level {t} is outside 0..{last}")
    if name == "smc" and not target.has_energy:
        raise SamplerError(
            "sampler 'smc' needs log densities for its importance weights, but the target is score-only",
            hint="use 'ula', 'uha' or 'reverse', or models with energies",
        )
    if kernel is not None and kernel.needs_energy and not target.has_energy:
        hint = (
            "pass mh='line_integral' to estimate energy differences from the score"
            if "mh" in {f.name for f in fields(kernel.Options)}
            else "use 'mala' or 'hmc' with mh='line_integral', or the unadjusted 'ula' / 'uha'"
        )
        raise SamplerError(
            f"kernel {kernel.name!r} needs log densities for its Metropolis test (mh='exact'), "
            "but the target is score-only",
            hint=hint,
        )


def _config(kernel: Optional[OptionsKernel], resolved: dict[str, Any]) -> AnnealedConfig:
    """The annealed-walk configuration; step sizes from the options or the kernel's defaults."""
    c, b = (kernel.annealed.step_scale, kernel.annealed.step_exponent) if kernel is not None else (1.0, 1.0)
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


def _is_pair(levels: Any) -> bool:
    return isinstance(levels, tuple) and len(levels) == 2 and all(isinstance(t, int) for t in levels)
