"""Numerics and per-level helpers of the exact oracles (:mod:`rrrdsl.models.oracles`): the log
mass of a normal interval, stable in both tails, and the checks, draws and per-level caches
the oracles share."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Union

import torch

from ..errors import InvalidValueError, ShapeError
from ..schedules import Level, Schedule

ArrayLike = Union[torch.Tensor, Sequence, float]

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


# --- numerics ---------------------------------------------------------------------------


def exp(z: torch.Tensor) -> torch.Tensor:
    """``exp(z)`` with ``z`` raised to ``log`` of the dtype's smallest normal number first.

    torch's vectorised CPU ``exp`` leaves its fast path for arguments that underflow (measured
    100x slower on a float32 batch below -88, which the far components of a mixture give at
    every step); below that floor the result is a subnormal or 0, and the floor's ``exp`` (1.2e-38
    in float32, 2.2e-308 in float64) is as negligible next to any term of order 1.
    """
    return torch.exp(z.clamp(min=math.log(torch.finfo(z.dtype).tiny)))


def logsumexp_and_softmax(z: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``logsumexp`` over ``dim`` and the normalised weights ``exp(z - logsumexp)``, sharing one
    :func:`exp` (the largest term is factored out first, so nothing overflows)."""
    top = z.amax(dim, keepdim=True)
    weights = exp(z - top)
    total = weights.sum(dim, keepdim=True)
    return (top + torch.log(total)).squeeze(dim), weights / total


def log1mexp(z: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(z))`` for ``z <= 0``, accurate over the whole range.

    Uses ``log(-expm1(z))`` for ``z > -log 2`` and ``log1p(-exp(z))`` below (Mächler, 2012,
    "Accurately computing log(1 - exp(-|a|))"). Each branch is fed a safe value where it is not
    selected, so that gradients stay finite; when every entry takes one branch only that branch
    is evaluated (the same numbers, half the work).
    """
    near = z > -math.log(2.0)
    branch = _one_branch(near)
    if branch is not None:
        return torch.log(-torch.expm1(z)) if branch else torch.log1p(-exp(z))
    safe = torch.full_like(z, -1.0)
    return torch.where(
        near,
        torch.log(-torch.expm1(torch.where(near, z, safe))),
        torch.log1p(-exp(torch.where(near, safe, z))),
    )


def _one_branch(mask: torch.Tensor) -> Optional[bool]:
    """``True`` when every entry of ``mask`` holds, ``False`` when none does, else ``None``."""
    if bool(mask.all()):
        return True
    return None if bool(mask.any()) else False


def _series_tolerance(dtype: torch.dtype) -> float:
    # The direct formula loses about eps / c to cancellation and the series truncates at
    # O(c^6); eps^(1/7) balances the two (about 0.1 in float32, 0.006 in float64).
    return torch.finfo(dtype).eps ** (1.0 / 7.0)


def log_normal_interval(m: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``log(Φ(m + h) - Φ(m - h))``: the log standard-normal mass of ``[m - h, m + h]``, ``h > 0``.

    The mass is symmetric in ``m``, so it is computed at ``-|m|``, where both ends sit in the
    left tail and ``log Φ`` (``torch.special.log_ndtr``) is accurate to ``|m|`` far beyond 50:
    ``log Φ(u) + log1mexp(log Φ(v) - log Φ(u))`` with ``u = -|m| + h``, ``v = -|m| - h``.
    When the interval is narrow on the scale of its position (``c = h · max(1, |m|)`` below
    :func:`_series_tolerance`), the two log-CDFs nearly cancel; there the Hermite expansion
    of ``∫_{-h}^{h} φ(m + s) ds`` is used instead::

        log(2h) + log φ(m) + log(1 + He_2(m) h^2/6 + He_4(m) h^4/120),

    with ``He_2 = m^2 - 1`` and ``He_4 = m^4 - 6 m^2 + 3`` (Abramowitz & Stegun, 1964, 22.2.15).
    Both branches are evaluated on safe inputs, so autograd stays finite; when every entry takes
    one branch only that branch is evaluated (the same numbers).
    """
    a = m.abs()
    series = h * torch.clamp(a, min=1.0) < _series_tolerance(m.dtype)
    branch = _one_branch(series)
    if branch is False:
        log_u, log_v = torch.special.log_ndtr(h - a), torch.special.log_ndtr(-h - a)
        return log_u + log1mexp(log_v - log_u)
    if branch:
        m2 = m**2
        h2 = (h**2).expand_as(m2)
        correction = (m2 - 1.0) * h2 / 6.0 + (m2 * m2 - 6.0 * m2 + 3.0) * h2 * h2 / 120.0
        return torch.log(2.0 * h.expand_as(m2)) - 0.5 * m2 - LOG_SQRT_2PI + torch.log1p(correction)
    one = torch.ones_like(h)
    h_direct = torch.where(series, one, h)
    log_u = torch.special.log_ndtr(h_direct - a)
    log_v = torch.special.log_ndtr(-h_direct - a)
    direct = log_u + log1mexp(log_v - log_u)
    h_series = torch.where(series, h, one)
    h2, m2 = h_series**2, m**2
    correction = (m2 - 1.0) * h2 / 6.0 + (m2 * m2 - 6.0 * m2 + 3.0) * h2 * h2 / 120.0
    expansion = torch.log(2.0 * h_series) - 0.5 * m2 - LOG_SQRT_2PI + torch.log1p(correction)
    return torch.where(series, expansion, direct)


def schedule_level(schedule: Schedule, t: Level, device: torch.device, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 ``(alpha_bar_t, sigma_t)``, scalars or (per-chain ``t``) of shape ``[N, 1, ...]`` with ``ndim`` dims."""
    like = torch.empty((1,) * ndim, dtype=torch.float64, device=device)
    return schedule.at(t, like)


def per_level(cache: dict, t: Level, x: torch.Tensor, build: Callable[[], Any]) -> Any:
    """``build()``, kept in ``cache`` per int level, dtype and device of ``x``: the quantities an
    oracle needs at one level for every chain are formed once, not at every evaluation (a
    per-chain ``t`` or ``"clean"`` is built afresh)."""
    if type(t) is not int:
        return build()
    key = (t, x.dtype, x.device)
    if key not in cache:
        cache[key] = build()
    return cache[key]


def categorical(weights: torch.Tensor, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """``n`` component indices drawn with probabilities ``weights`` (``n = 0`` allowed)."""
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def as_float64(value: ArrayLike, what: str) -> torch.Tensor:
    try:
        out = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} must be numbers, got {value!r}") from exc
    if not torch.isfinite(out).all():
        raise InvalidValueError(f"{what} must be finite")
    return out.detach().cpu()


def normalised_weights(weights: Optional[ArrayLike], k: int, what: str) -> torch.Tensor:
    """``k`` positive weights (equal when None) as float64, normalised to sum 1."""
    if weights is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    w = as_float64(weights, what)
    if list(w.shape) != [k]:
        raise ShapeError(f"{what} must have one entry per component ({k}), got shape {list(w.shape)}")
    if not (w > 0).all():
        raise InvalidValueError(f"{what} must be positive, got {w.min().item():g}")
    return w / w.sum()
