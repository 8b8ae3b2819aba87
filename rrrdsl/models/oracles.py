"""Exact analytic models: Gaussian mixtures, uniform boxes and finite mixtures of those.

Each oracle knows its clean density ``q_0`` and, in closed form, every noised marginal of the
variance-preserving forward process (Ho et al., 2020)::

    q_t(x) = ∫ q_0(y) N(x; sqrt(alpha_bar_t) y, sigma_t^2 I) dy,    sigma_t^2 = 1 - alpha_bar_t.

* **Gaussian mixture** ``Σ_k π_k N(μ_k, diag(s_k^2))``: the convolution of a Gaussian with a
  Gaussian kernel is Gaussian, so ``q_t = Σ_k π_k N(sqrt(alpha_bar_t) μ_k,
  diag(alpha_bar_t s_k^2 + sigma_t^2))``. The score is the responsibility-weighted sum of the
  component scores (Bishop, 2006, §9.2).
* **Uniform box** on ``[a, b] ⊂ R^D``: the kernel factorises over coordinates, and with
  ``r = sqrt(alpha_bar_t)``, ``σ = sigma_t`` and the substitution ``u = r y``::

      q_t(x_d) = 1/(b_d - a_d) ∫_{a_d}^{b_d} N(x_d; r y, σ^2) dy
               = [Φ((x_d - r a_d)/σ) - Φ((x_d - r b_d)/σ)] / (r (b_d - a_d)).

  Writing ``m = (x_d - r (a_d + b_d)/2)/σ`` (the standardised distance to the box centre) and
  ``h = r (b_d - a_d)/(2σ)`` (the standardised half-width), the bracket is the normal mass
  ``Φ(m + h) - Φ(m - h)`` of an interval; :func:`log_normal_interval` evaluates its log
  stably, and the score is ``∂_x log q_t = (φ(m + h) - φ(m - h)) / (σ (Φ(m + h) - Φ(m - h)))``.
* **Mixture of oracles** ``Σ_j w_j q^j_t``: exact, since every oracle is normalised.

At the *clean* level (``t = "clean"``, ``alpha_bar = 1``) a Gaussian mixture is its clean
density; a box has ``log q = -log(volume)`` inside (boundary included) and ``-inf`` outside,
and its score is taken to be 0 everywhere: the density is flat inside and has no gradient
outside its support.

All parameters are stored in float64. Computations run in the dtype and on the device of
``x``; the level quantities ``alpha_bar_t`` and ``sigma_t^2`` are formed in float64 first, so
that ``1 - alpha_bar_t`` keeps its precision at the least noisy levels even in float32.
"""

from __future__ import annotations

import abc
import math
from typing import Optional, Sequence, Union

import torch

from .. import schedules
from ..errors import InvalidValueError, ShapeError
from ..schedules import CLEAN, Level, Schedule
from .base import Model

ArrayLike = Union[torch.Tensor, Sequence, float]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


# --- numerics ---------------------------------------------------------------------------


def log1mexp(z: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(z))`` for ``z <= 0``, accurate over the whole range.

    Uses ``log(-expm1(z))`` for ``z > -log 2`` and ``log1p(-exp(z))`` below (Mächler, 2012,
    "Accurately computing log(1 - exp(-|a|))"). Each branch is fed a safe value where it is not
    selected, so that gradients stay finite.
    """
    near = z > -math.log(2.0)
    safe = torch.full_like(z, -1.0)
    return torch.where(
        near,
        torch.log(-torch.expm1(torch.where(near, z, safe))),
        torch.log1p(-torch.exp(torch.where(near, safe, z))),
    )


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
    Both branches are evaluated on safe inputs, so autograd stays finite.
    """
    a = m.abs()
    series = h * torch.clamp(a, min=1.0) < _series_tolerance(m.dtype)
    one = torch.ones_like(h)
    h_direct = torch.where(series, one, h)
    log_u = torch.special.log_ndtr(h_direct - a)
    log_v = torch.special.log_ndtr(-h_direct - a)
    direct = log_u + log1mexp(log_v - log_u)
    h_series = torch.where(series, h, one)
    h2, m2 = h_series**2, m**2
    correction = (m2 - 1.0) * h2 / 6.0 + (m2 * m2 - 6.0 * m2 + 3.0) * h2 * h2 / 120.0
    expansion = torch.log(2.0 * h_series) - 0.5 * m2 - _LOG_SQRT_2PI + torch.log1p(correction)
    return torch.where(series, expansion, direct)


def _level(schedule: Schedule, t: Level, device: torch.device, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 ``(alpha_bar_t, sigma_t)``, scalars or (per-chain ``t``) of shape ``[N, 1, ...]`` with ``ndim`` dims."""
    like = torch.empty((1,) * ndim, dtype=torch.float64, device=device)
    return schedule.at(t, like)


def _categorical(weights: torch.Tensor, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """``n`` component indices drawn with probabilities ``weights`` (``n = 0`` allowed)."""
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def _as_float64(value: ArrayLike, what: str) -> torch.Tensor:
    try:
        out = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} must be numbers, got {value!r}") from exc
    if not torch.isfinite(out).all():
        raise InvalidValueError(f"{what} must be finite")
    return out.detach().cpu()


def _normalised_weights(weights: Optional[ArrayLike], k: int, what: str) -> torch.Tensor:
    """``k`` positive weights (equal when None) as float64, normalised to sum 1."""
    if weights is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    w = _as_float64(weights, what)
    if list(w.shape) != [k]:
        raise ShapeError(f"{what} must have one entry per component ({k}), got shape {list(w.shape)}")
    if not (w > 0).all():
        raise InvalidValueError(f"{what} must be positive, got {w.min().item():g}")
    return w / w.sum()


# --- the oracle protocol ------------------------------------------------------------------


class Oracle(Model):
    """An exact, normalised analytic model with a known clean density.

    Adds to :class:`~rrrdsl.models.base.Model` exact sampling (:meth:`sample`) and
    :meth:`tail_precisions`, which the compiler uses to decide whether a composition of
    oracles is normalisable.
    """

    has_energy = True

    @property
    def is_normalized(self) -> bool:
        return True

    @abc.abstractmethod
    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """Exact, normalised ``log q_t(x)``, shape ``[N]``."""

    @abc.abstractmethod
    def tail_precisions(self, t: Union[int, str]) -> torch.Tensor:
        """Per-component, per-axis precision of the Gaussian tail of ``log q_t``, shape ``[K, D]``.

        As ``|x_d| -> inf`` every component's log density falls like ``-λ x_d^2 / 2``; this
        returns the ``λ`` (float64), ``inf`` where the tail is cut off (a clean box).
        """

    @abc.abstractmethod
    def sample_clean(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` exact samples of the clean density ``q_0``, float64, shape ``[n, D]``."""

    def sample(self, n: int, generator: Optional[torch.Generator] = None, t: Level = CLEAN) -> torch.Tensor:
        """``n`` exact samples of ``q_t`` (float64, CPU, shape ``[n, D]``).

        A clean sample ``x_0`` is noised by the forward process:
        ``x_t = sqrt(alpha_bar_t) x_0 + sigma_t ε`` with ``ε ~ N(0, I)``; ``t`` may be an int,
        a per-sample level tensor ``[n]`` or ``"clean"``.
        """
        if not isinstance(n, int) or n < 0:
            raise InvalidValueError(f"the number of samples must be a non-negative integer, got {n!r}")
        x0 = self.sample_clean(n, generator)
        alpha_bar, sigma = _level(self.schedule, t, x0.device, 2)
        if isinstance(t, str):
            return x0
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        return alpha_bar.sqrt() * x0 + sigma * noise

    def _check_points(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"{self.description or type(self).__name__} expects points of shape [N, {self.dim}], got {shape}")

    def _tail_level(self, t: Union[int, str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            raise InvalidValueError("tail_precisions takes one level (an int or 'clean'), not a per-chain tensor")
        return _level(self.schedule, t, torch.device("cpu"), 1)


def _schedule(schedule: Optional[Schedule]) -> Schedule:
    if schedule is None:
        return schedules.default()
    if not isinstance(schedule, Schedule):
        raise InvalidValueError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    return schedule


# --- Gaussian mixtures --------------------------------------------------------------------


class GaussianMixture(Oracle):
    """A Gaussian mixture ``Σ_k π_k N(μ_k, diag(s_k^2))`` and its exact noised marginals.

    Parameters
    ----------
    means
        Component means, ``[K, D]``.
    std
        Standard deviations: a scalar, ``[K]`` (isotropic per component) or ``[K, D]``
        (diagonal).
    weights
        ``K`` positive weights, normalised (default equal).
    schedule
        The noise schedule (default :func:`rrrdsl.schedules.default`).
    description
        A short description for graphs and error messages.
    """

    def __init__(
        self,
        means: ArrayLike,
        std: ArrayLike = 1.0,
        weights: Optional[ArrayLike] = None,
        schedule: Optional[Schedule] = None,
        description: str = "",
    ) -> None:
        mu = _as_float64(means, "gmm means")
        if mu.dim() != 2 or mu.shape[0] == 0 or mu.shape[1] == 0:
            raise ShapeError(f"gmm means must have shape [K, D], got {list(mu.shape)}")
        k, d = mu.shape
        s = _as_float64(std, "gmm std")
        if s.dim() == 0:
            s = s.expand(k, d)
        elif s.dim() == 1 and s.shape[0] == k:
            s = s[:, None].expand(k, d)
        elif list(s.shape) != [k, d]:
            raise ShapeError(f"gmm std must be a scalar, [K] = [{k}] or [K, D] = [{k}, {d}], got {list(s.shape)}")
        if not (s > 0).all():
            raise InvalidValueError(f"gmm std must be positive, got {s.min().item():g}")
        w = _normalised_weights(weights, k, "gmm weights")
        self.means = mu
        self.std = s.contiguous()
        self.weights = w
        self.dim = d
        self.schedule = _schedule(schedule)
        self.description = description or f"Gaussian mixture ({k} components in {d}D)"

    def noised_variances(self, t: Level, device: torch.device = torch.device("cpu")) -> torch.Tensor:
        """``alpha_bar_t s_k^2 + sigma_t^2`` in float64: ``[K, D]``, or ``[N, K, D]`` for per-chain ``t``."""
        alpha_bar, sigma = _level(self.schedule, t, device, 3)
        return alpha_bar * self.std.to(device) ** 2 + sigma**2

    def _log_joint(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``log π_k + log N(x; m_k, v_k)`` ``[N, K]``, the offsets ``x - m_k`` and the variances ``v_k``."""
        self._check_points(x)
        alpha_bar, _ = _level(self.schedule, t, x.device, 3)
        var = self.noised_variances(t, x.device).to(x.dtype)
        means = (alpha_bar.sqrt() * self.means.to(x.device)).to(x.dtype)
        diff = x[:, None, :] - means
        log_norm = -0.5 * (diff**2 / var + torch.log(var)).sum(-1) - self.dim * _LOG_SQRT_2PI
        return self.weights.to(x).log() + log_norm, diff, var

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        return torch.logsumexp(self._log_joint(x, t)[0], dim=-1)

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``-Σ_k r_k(x) (x - m_k) / v_k`` with posterior responsibilities ``r_k(x)``."""
        log_joint, diff, var = self._log_joint(x, t)
        resp = torch.softmax(log_joint, dim=-1)
        return -(resp[..., None] * diff / var).sum(-2)

    def tail_precisions(self, t: Union[int, str]) -> torch.Tensor:
        self._tail_level(t)
        return 1.0 / self.noised_variances(t)

    def sample_clean(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        k = _categorical(self.weights, n, generator)
        noise = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        return self.means[k] + self.std[k] * noise


# --- uniform boxes ------------------------------------------------------------------------


class Box(Oracle):
    """The uniform density on ``[low, high] ⊂ R^D`` and its exact noised marginals.

    ``q_t`` factorises over coordinates into normal-CDF differences (module docstring); the
    log density uses :func:`log_normal_interval` and stays finite and accurate in float32 and
    float64 far outside the box (tested to 50 ``sigma_t``).

    Parameters
    ----------
    low, high
        The corners, ``D`` coordinates each, ``low < high``.
    schedule
        The noise schedule (default :func:`rrrdsl.schedules.default`).
    description
        A short description for graphs and error messages.
    """

    def __init__(
        self,
        low: ArrayLike,
        high: ArrayLike,
        schedule: Optional[Schedule] = None,
        description: str = "",
    ) -> None:
        lo = _as_float64(low, "box low").reshape(-1)
        hi = _as_float64(high, "box high").reshape(-1)
        if lo.shape != hi.shape or lo.numel() == 0:
            raise ShapeError(f"box low and high need the same number of coordinates, got {lo.numel()} and {hi.numel()}")
        if not (lo < hi).all():
            i = int(torch.nonzero(lo >= hi)[0])
            raise InvalidValueError(f"box needs low < high in every coordinate; coordinate {i} has low={lo[i]:g}, high={hi[i]:g}")
        self.low = lo
        self.high = hi
        self.dim = lo.numel()
        self.schedule = _schedule(schedule)
        self.description = description or f"uniform box in {self.dim}D"

    @property
    def log_volume(self) -> float:
        return float(torch.log(self.high - self.low).sum())

    def _standardise(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``m`` ``[N, D]``, ``h``, ``sigma`` and ``log(r (b - a))`` in ``x``'s dtype (see module docstring)."""
        alpha_bar, sigma = _level(self.schedule, t, x.device, 2)
        r = alpha_bar.sqrt()
        low, high = self.low.to(x.device), self.high.to(x.device)
        centre = (r * 0.5 * (low + high)).to(x.dtype)
        h = (r * 0.5 * (high - low) / sigma).to(x.dtype)
        log_width = torch.log(r * (high - low)).to(x.dtype)
        sigma = sigma.to(x.dtype)
        return (x - centre) / sigma, h, sigma, log_width

    def _inside(self, x: torch.Tensor) -> torch.Tensor:
        return ((x >= self.low.to(x)) & (x <= self.high.to(x))).all(-1)

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        self._check_points(x)
        if isinstance(t, str):
            self.schedule.at(t, x)  # validates the level name
            flat = torch.full(x.shape[:1], -self.log_volume, dtype=x.dtype, device=x.device)
            flat = torch.where(self._inside(x), flat, -math.inf)
            return flat + (x - x.detach()).sum(-1)  # zero, but keeps the autograd graph
        m, h, _, log_width = self._standardise(x, t)
        return (log_normal_interval(m, h) - log_width).sum(-1)

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``(φ(m + h) - φ(m - h)) / (σ (Φ(m + h) - Φ(m - h)))`` per coordinate, evaluated as
        ``-sign(m) exp(log φ(|m| - h) - log mass) (1 - exp(-2 |m| h)) / σ``, which neither
        overflows nor cancels; 0 at the clean level."""
        self._check_points(x)
        if isinstance(t, str):
            self.schedule.at(t, x)
            return torch.zeros_like(x)
        m, h, sigma, _ = self._standardise(x, t)
        a = m.abs()
        log_phi = -0.5 * (a - h) ** 2 - _LOG_SQRT_2PI
        ratio = torch.exp(log_phi - log_normal_interval(m, h))
        return -torch.sign(m) * ratio * -torch.expm1(-2.0 * a * h) / sigma

    def tail_precisions(self, t: Union[int, str]) -> torch.Tensor:
        _, sigma = self._tail_level(t)
        return (1.0 / sigma**2).expand(1, self.dim).clone()

    def sample_clean(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        u = torch.rand((n, self.dim), generator=generator, dtype=torch.float64)
        return self.low + (self.high - self.low) * u


# --- mixtures of oracles ------------------------------------------------------------------


class OracleMixture(Oracle):
    """A finite mixture ``Σ_j w_j q^j_t`` of oracles that share a dimension and a schedule.

    Parameters
    ----------
    components
        The oracles.
    weights
        Positive weights, normalised (default equal).
    description
        A short description for graphs and error messages.
    """

    def __init__(
        self,
        components: Sequence[Oracle],
        weights: Optional[ArrayLike] = None,
        description: str = "",
    ) -> None:
        components = list(components)
        if not components or not all(isinstance(c, Oracle) for c in components):
            raise InvalidValueError("an oracle mixture needs a non-empty list of oracles")
        first = components[0]
        for c in components[1:]:
            if c.dim != first.dim:
                raise ShapeError(f"mixture components differ in dimension: {first.description} has {first.dim}, {c.description} has {c.dim}")
            if c.schedule != first.schedule:
                raise InvalidValueError(f"mixture components differ in schedule: {first.schedule} and {c.schedule}")
        j = len(components)
        w = _normalised_weights(weights, j, "mixture weights")
        self.components = components
        self.weights = w
        self.dim = first.dim
        self.schedule = first.schedule
        self.description = description or f"mixture of {j} oracles"

    def _log_joint(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        self._check_points(x)
        log_probs = torch.stack([c.log_prob(x, t) for c in self.components], dim=-1)
        return self.weights.to(x).log() + log_probs

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        return torch.logsumexp(self._log_joint(x, t), dim=-1)

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``Σ_j r_j(x) ∇ log q^j_t(x)``; responsibilities are 0 where every component has
        zero density (outside every clean box)."""
        log_joint = self._log_joint(x, t)
        total = torch.logsumexp(log_joint, dim=-1, keepdim=True)
        resp = torch.where(torch.isfinite(total), torch.exp(log_joint - total), torch.zeros_like(log_joint))
        scores = torch.stack([c.score(x, t) for c in self.components], dim=-2)
        return (resp[..., None] * scores).sum(-2)

    def tail_precisions(self, t: Union[int, str]) -> torch.Tensor:
        return torch.cat([c.tail_precisions(t) for c in self.components], dim=0)

    def sample_clean(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        which = _categorical(self.weights, n, generator)
        out = torch.empty((n, self.dim), dtype=torch.float64)
        for j, component in enumerate(self.components):
            rows = torch.nonzero(which == j).reshape(-1)
            out[rows] = component.sample_clean(rows.numel(), generator)
        return out
