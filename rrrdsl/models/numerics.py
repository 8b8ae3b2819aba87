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


def exp_floor(dtype: torch.dtype) -> float:
    """``log(tiny / eps)`` of the dtype (-71.4 in float32, -672.4 in float64): the least argument
    of :func:`exp`, whose result keeps a factor ``1 / eps`` of room above the smallest normal
    number; at most ``2 log eps``, so that it stays negligible in a half-precision type too."""
    info = torch.finfo(dtype)
    return min(math.log(info.tiny / info.eps), 2.0 * math.log(info.eps))


def exp(z: torch.Tensor) -> torch.Tensor:
    """``exp(z)`` with ``z`` raised to :func:`exp_floor` first.

    Subnormal numbers send the CPU's vector units to a microcode slow path: torch's ``exp`` of a
    float32 batch whose results underflow, and the matrix products and quotients of such results,
    were measured 50-100x slower (the far components of a mixture give them at every step). The
    floor's ``exp`` (1e-31 in float32, 5e-293 in float64) is negligible next to any term within
    ``1 / eps`` of order 1, and its products with numbers down to ``eps`` stay normal.
    """
    return torch.exp(z.clamp(min=exp_floor(z.dtype)))


def logsumexp_and_softmax(z: torch.Tensor, dim: int, inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``logsumexp`` over ``dim`` and the normalised weights ``exp(z - logsumexp)``, sharing one
    :func:`exp` (the largest term is factored out first, so nothing overflows). ``inplace``
    writes the weights over ``z`` (no autograd: the fused evaluations)."""
    top = z.amax(dim, keepdim=True)
    if inplace:
        weights = z.sub_(top).clamp_(min=exp_floor(z.dtype)).exp_()
    else:
        weights = exp(z - top)
    total = weights.sum(dim, keepdim=True)
    log_total = (top + torch.log(total)).squeeze(dim)
    return log_total, weights.div_(total) if inplace else weights / total


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


def _central_reach(dtype: torch.dtype) -> float:
    # Where |m| - h is below half the standardised distance sqrt(-2 exp_floor) at which exp
    # reaches its floor (6.0 in float32, 18.3 in float64), the masses Φ(-|h - |m||) stay far
    # above the floor Φ(-(h + |m|)) is clamped to, and erfc stays in its fast, normal range.
    return 0.5 * math.sqrt(-2.0 * exp_floor(dtype))


def log_normal_interval(m: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``log(Φ(m + h) - Φ(m - h))``: the log standard-normal mass of ``[m - h, m + h]``, ``h > 0``.

    The mass is symmetric in ``m``, so it is computed at ``a = |m|``, in one of three regions:

    * **central** (``a - h`` below :func:`_central_reach`, the common case): the mass is
      ``Φ(h - a) - Φ(-h - a)`` with ``Φ(u) = erfc(-u / sqrt 2) / 2``; inside the interval
      (``a <= h``) the first term is at least 1/2 and the second at most 1/2 (no cancellation),
      outside both ends are in the left tail, where ``erfc`` is accurate to relative rounding;
      ``erfc`` is vectorised, where ``log_ndtr`` is 50x slower;
    * **far tail** (``a - h`` beyond it): ``log Φ`` (``torch.special.log_ndtr``) is accurate to
      ``a`` far beyond 50: ``log Φ(u) + log1mexp(log Φ(v) - log Φ(u))`` with ``u = h - a``,
      ``v = -h - a``;
    * **narrow** (``c = h · max(1, a)`` below :func:`_series_tolerance`), where the two masses
      nearly cancel: the Hermite expansion of ``∫_{-h}^{h} φ(m + s) ds``::

        log(2h) + log φ(m) + log(1 + He_2(m) h^2/6 + He_4(m) h^4/120),

      with ``He_2 = m^2 - 1`` and ``He_4 = m^4 - 6 m^2 + 3`` (Abramowitz & Stegun, 1964, 22.2.15).

    The central formula runs on every entry (on a safe stand-in where another region holds, so
    that autograd stays finite), and the other two on their entries only. The narrow region is
    only looked for when some ``h`` is below the tolerance (at one level ``h`` is ``[D]``).
    """
    a = m.abs()
    tolerance = _series_tolerance(m.dtype)
    narrow = h * torch.clamp(a, min=1.0) < tolerance if bool((h < tolerance).any()) else torch.zeros_like(a, dtype=torch.bool)
    if bool(narrow.all()):
        return _hermite(a, h.expand_as(a))
    upper = h - a
    far = (upper < -_central_reach(m.dtype)) & ~narrow
    regions = [(mask, branch) for mask, branch in ((far, _left_tails), (narrow, _hermite)) if bool(mask.any())]
    if not regions:
        return _central(upper, h + a)
    central = ~(narrow | far)
    out = _central(torch.where(central, upper, 1.0), torch.where(central, h + a, 1.0))
    h = h.expand_as(a)
    for mask, branch in regions:
        out = out.index_put((mask,), branch(a[mask], h[mask]))
    return out


def normal_interval_slope(m: torch.Tensor, h: torch.Tensor, log_mass: torch.Tensor) -> torch.Tensor:
    """``∂_m log(Φ(m + h) - Φ(m - h)) = (φ(m + h) - φ(m - h)) / mass``, given the log mass
    (:func:`log_normal_interval`), evaluated as ``-sign(m) exp(log φ(|m| - h) - log mass)
    (1 - exp(-2 |m| h))``, which neither overflows nor cancels. ``-2 |m| h`` is raised to
    ``2 log eps``, where ``expm1`` is -1 to rounding (below about -50 float32's ``expm1`` leaves
    its vectorised path, measured 10x slower)."""
    a = m.abs()
    u = a - h
    ratio = exp(torch.addcmul(log_mass, u, u, value=0.5).neg_().sub_(LOG_SQRT_2PI))
    decay = torch.expm1(torch.clamp(-2.0 * a * h, min=2.0 * math.log(torch.finfo(m.dtype).eps)))
    return torch.sign(m) * ratio * decay  # the two signs of the formula cancel


def _central(upper: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """``log(Φ(upper) - Φ(-spread))`` from ``erfc``, with ``upper = h - a`` and ``spread = h + a``;
    the arguments are clamped where a tail mass is below the dtype's resolution, so that ``erfc``
    never returns a (slow) subnormal number."""
    reach = 2.0 * _central_reach(upper.dtype)
    lower_mass = torch.special.erfc(torch.clamp(upper, min=-reach) * (-1.0 / math.sqrt(2.0)))
    tail_mass = torch.special.erfc(torch.clamp(spread, max=reach) * (1.0 / math.sqrt(2.0)))
    return torch.log(lower_mass - tail_mass) - math.log(2.0)


def _left_tails(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    log_u, log_v = torch.special.log_ndtr(h - a), torch.special.log_ndtr(-h - a)
    return log_u + log1mexp(log_v - log_u)


def _hermite(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    a2, h2 = a**2, h**2
    correction = (a2 - 1.0) * h2 / 6.0 + (a2 * a2 - 6.0 * a2 + 3.0) * h2 * h2 / 120.0
    return torch.log(2.0 * h) - 0.5 * a2 - LOG_SQRT_2PI + torch.log1p(correction)


def schedule_level(schedule: Schedule, t: Level, device: torch.device, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 ``(alpha_bar_t, sigma_t)``, scalars or (per-chain ``t``) of shape ``[N, 1, ...]`` with ``ndim`` dims."""
    like = torch.empty((1,) * ndim, dtype=torch.float64, device=device)
    return schedule.at(t, like)


def per_level(cache: dict, schedule: Schedule, t: Level, x: torch.Tensor, build: Callable[[Level], Any]) -> Any:
    """The named tuple of tensors ``build(t)`` that an oracle needs at level ``t``, in the dtype
    and on the device of ``x``, kept in ``cache``.

    At an int level ``build(t)`` is kept per level. For per-chain levels ``t`` ``[N]`` the table
    ``build(arange(T))`` of every level (levels first) is built once and its rows are gathered by
    ``t`` (``None`` entries stay ``None``): one row gather per tensor, instead of ``[N, ...]``
    float64 constants formed afresh at every evaluation. ``"clean"`` is built afresh.
    """
    key = (t if type(t) is int else "levels", x.dtype, x.device)
    if isinstance(t, torch.Tensor) and t.dim() == 1:
        if key not in cache:
            cache[key] = build(torch.arange(schedule.num_levels, device=x.device))
        index = t.to(device=x.device, dtype=torch.long)
        return cache[key]._make(None if v is None else v.index_select(0, index) for v in cache[key])
    if type(t) is not int:
        return build(t)
    if key not in cache:
        cache[key] = build(t)
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
