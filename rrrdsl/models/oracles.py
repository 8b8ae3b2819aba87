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
from typing import NamedTuple, Optional, Sequence, Union

import torch

from .. import schedules
from ..errors import InvalidValueError, ShapeError
from ..schedules import CLEAN, Level, Schedule
from .base import Model
from .numerics import (
    LOG_SQRT_2PI,
    ArrayLike,
    as_float64,
    categorical,
    exp,
    schedule_level,
    log_normal_interval,
    logsumexp_and_softmax,
    normal_interval_slope,
    normalised_weights,
    per_level,
)


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
    def log_prob_and_score(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log q_t(x), ∇_x log q_t(x))`` in one analytic pass that shares their common terms
        (no autograd): the compiled target's fused evaluation (:mod:`rrrdsl.compiler.plan`)."""

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
        alpha_bar, sigma = schedule_level(self.schedule, t, x0.device, 2)
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
        return schedule_level(self.schedule, t, torch.device("cpu"), 1)


def _schedule(schedule: Optional[Schedule]) -> Schedule:
    if schedule is None:
        return schedules.default()
    if not isinstance(schedule, Schedule):
        raise InvalidValueError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    return schedule


# --- Gaussian mixtures --------------------------------------------------------------------


class _GaussianLevel(NamedTuple):
    """A Gaussian mixture at one level: ``log π_k - Σ_d log v_kd / 2 - D log sqrt(2π)`` ``[K, 1]``,
    means ``m_k``, precisions ``1 / v_k`` and ``m_k / v_k`` ``[K, D, 1]``, chains last (every
    reduction runs over an outer axis); at per-chain levels ``[N, K]`` and ``[N, K, D]``, chains
    first as in ``x`` (no transposes), without ``m_k / v_k`` (None)."""

    log_norm: torch.Tensor
    means: torch.Tensor
    precision: torch.Tensor
    weighted_means: Optional[torch.Tensor]


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
        mu = as_float64(means, "gmm means")
        if mu.dim() != 2 or mu.shape[0] == 0 or mu.shape[1] == 0:
            raise ShapeError(f"gmm means must have shape [K, D], got {list(mu.shape)}")
        k, d = mu.shape
        s = as_float64(std, "gmm std")
        if s.dim() == 0:
            s = s.expand(k, d)
        elif s.dim() == 1 and s.shape[0] == k:
            s = s[:, None].expand(k, d)
        elif list(s.shape) != [k, d]:
            raise ShapeError(f"gmm std must be a scalar, [K] = [{k}] or [K, D] = [{k}, {d}], got {list(s.shape)}")
        if not (s > 0).all():
            raise InvalidValueError(f"gmm std must be positive, got {s.min().item():g}")
        w = normalised_weights(weights, k, "gmm weights")
        self.means = mu
        self.std = s.contiguous()
        self.weights = w
        self.dim = d
        self.schedule = _schedule(schedule)
        self.description = description or f"Gaussian mixture ({k} components in {d}D)"
        self._cache: dict = {}

    def noised_variances(self, t: Level, device: torch.device = torch.device("cpu")) -> torch.Tensor:
        """``alpha_bar_t s_k^2 + sigma_t^2`` in float64: ``[K, D]``, or ``[N, K, D]`` for per-chain ``t``."""
        alpha_bar, sigma = schedule_level(self.schedule, t, device, 3)
        return alpha_bar * self.std.to(device) ** 2 + sigma**2

    def _constants(self, t: Level, x: torch.Tensor) -> _GaussianLevel:
        """The components at level ``t`` in ``x``'s dtype, formed in float64 (cached:
        :func:`~rrrdsl.models.numerics.per_level`)."""

        def build(level: Level) -> _GaussianLevel:
            alpha_bar, _ = schedule_level(self.schedule, level, x.device, 3)
            var = self.noised_variances(level, x.device)
            means = alpha_bar.sqrt() * self.means.to(x.device)
            log_norm = self.weights.to(x.device).log() - 0.5 * torch.log(var).sum(-1) - self.dim * LOG_SQRT_2PI
            if var.dim() == 3:  # the table of every level, [T, K, D]
                return _GaussianLevel(*(part.to(x.dtype) for part in (log_norm, means, 1.0 / var)), None)
            parts = (log_norm[:, None], means[..., None], 1.0 / var[..., None], (means / var)[..., None])
            return _GaussianLevel(*(part.to(x.dtype) for part in parts))

        return per_level(self._cache, self.schedule, t, x, build)

    def _offsets(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, _GaussianLevel, int]:
        """``x - m_k`` (``[K, D, N]``; ``[N, K, D]`` per chain), the level and the axis of ``D``."""
        self._check_points(x)
        level = self._constants(t, x)
        if level.weighted_means is None:
            return x[:, None, :] - level.means, level, 2
        return x.T.contiguous() - level.means, level, 1

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        diff, level, d_axis = self._offsets(x, t)
        quadratic = diff.square().mul_(level.precision).sum(d_axis)
        return logsumexp_and_softmax(torch.sub(level.log_norm, quadratic, alpha=0.5), d_axis - 1)[0]

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``-Σ_k r_k(x) (x - m_k) / v_k`` with posterior responsibilities ``r_k(x)``."""
        return self.log_prob_and_score(x, t)[1]

    def log_prob_and_score(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor]:
        """``log q_t = logsumexp_k(log π_k + log N(x; m_k, v_k))`` and its gradient
        ``-Σ_k r_k (x - m_k) / v_k`` with ``r_k = exp(log π_k + log N_k - log q_t)`` (Bishop, 2006,
        §9.2), in place on fresh temporaries (no autograd). At one level for every chain the sum
        over ``k`` is two matrix products, ``r^T (M P) - x ⊙ (r^T P)`` with ``P = 1 / v`` and
        ``M`` the means ``[K, D]``; per chain it is a sum over the scaled offsets ``(x - m_k) / v_k``."""
        diff, level, d_axis = self._offsets(x, t)
        if level.weighted_means is not None:  # one level for every chain
            quadratic = diff.square_().mul_(level.precision).sum(1)
            log_prob, resp = logsumexp_and_softmax(torch.sub(level.log_norm, quadratic, alpha=0.5), 0, inplace=True)
            pulled = resp.T @ level.weighted_means[..., 0]
            return log_prob, torch.addcmul(pulled, x, resp.T @ level.precision[..., 0], value=-1.0)
        scaled = diff * level.precision
        quadratic = diff.mul_(scaled).sum(2)
        log_prob, resp = logsumexp_and_softmax(torch.sub(level.log_norm, quadratic, alpha=0.5), 1, inplace=True)
        return log_prob, scaled.mul_(resp[..., None]).sum(1).neg_()

    def tail_precisions(self, t: Union[int, str]) -> torch.Tensor:
        self._tail_level(t)
        return 1.0 / self.noised_variances(t)

    def sample_clean(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        k = categorical(self.weights, n, generator)
        noise = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        return self.means[k] + self.std[k] * noise


# --- uniform boxes ------------------------------------------------------------------------


class _BoxLevel(NamedTuple):
    """A box at one level: the centre ``r (a + b)/2`` and standardised half-width ``h`` ``[D]``,
    ``sigma_t`` and ``log(r (b - a))`` (``[N, D]`` and ``[N, 1]`` for a per-chain level)."""

    centre: torch.Tensor
    half_width: torch.Tensor
    sigma: torch.Tensor
    log_width: torch.Tensor


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
        lo = as_float64(low, "box low").reshape(-1)
        hi = as_float64(high, "box high").reshape(-1)
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
        self._cache: dict = {}

    @property
    def log_volume(self) -> float:
        return float(torch.log(self.high - self.low).sum())

    def _standardise(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``m`` ``[N, D]``, ``h``, ``sigma`` and ``log(r (b - a))`` in ``x``'s dtype (see module
        docstring); the level's constants are cached (:func:`~rrrdsl.models.numerics.per_level`)."""

        def build(level: Level) -> _BoxLevel:
            alpha_bar, sigma = schedule_level(self.schedule, level, x.device, 2)
            r = alpha_bar.sqrt()
            low, high = self.low.to(x.device), self.high.to(x.device)
            centre = (r * 0.5 * (low + high)).to(x.dtype)
            h = (r * 0.5 * (high - low) / sigma).to(x.dtype)
            log_width = torch.log(r * (high - low)).to(x.dtype)
            return _BoxLevel(centre, h, sigma.to(x.dtype), log_width)

        centre, h, sigma, log_width = per_level(self._cache, self.schedule, t, x, build)
        return (x - centre).div_(sigma), h, sigma, log_width

    def _inside(self, x: torch.Tensor) -> torch.Tensor:
        return ((x >= self.low.to(x)) & (x <= self.high.to(x))).all(-1)

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        self._check_points(x)
        if isinstance(t, str):
            self.schedule.at(t, x)  # validates the level name
            flat = torch.full(x.shape[:1], -self.log_volume, dtype=x.dtype, device=x.device)
            flat = torch.where(self._inside(x), flat, -math.inf)
            return flat + (0 * x).sum(-1)  # zero with a zero gradient, but keeps the autograd graph
        m, h, _, log_width = self._standardise(x, t)
        return (log_normal_interval(m, h) - log_width).sum(-1)

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``(φ(m + h) - φ(m - h)) / (σ (Φ(m + h) - Φ(m - h)))`` per coordinate
        (:func:`~rrrdsl.models.numerics.normal_interval_slope`); 0 at the clean level."""
        self._check_points(x)
        if isinstance(t, str):
            self.schedule.at(t, x)
            return torch.zeros_like(x)
        m, h, sigma, _ = self._standardise(x, t)
        return normal_interval_slope(m, h, log_normal_interval(m, h)) / sigma

    def log_prob_and_score(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`log_prob` and :meth:`score` sharing the log mass ``log(Φ(m + h) - Φ(m - h))``."""
        if isinstance(t, str):
            return self.log_prob(x, t), self.score(x, t)
        self._check_points(x)
        m, h, sigma, log_width = self._standardise(x, t)
        log_mass = log_normal_interval(m, h)
        return (log_mass - log_width).sum(-1), normal_interval_slope(m, h, log_mass) / sigma

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
        w = normalised_weights(weights, j, "mixture weights")
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
        scores = torch.stack([c.score(x, t) for c in self.components], dim=-2)
        return self._score(log_joint, torch.logsumexp(log_joint, dim=-1, keepdim=True), scores)

    def log_prob_and_score(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`log_prob` and :meth:`score` from one fused evaluation of each component."""
        self._check_points(x)
        parts = [c.log_prob_and_score(x, t) for c in self.components]
        log_joint = self.weights.to(x).log() + torch.stack([log_prob for log_prob, _ in parts], dim=-1)
        total = torch.logsumexp(log_joint, dim=-1, keepdim=True)
        return total.squeeze(-1), self._score(log_joint, total, torch.stack([score for _, score in parts], dim=-2))

    @staticmethod
    def _score(log_joint: torch.Tensor, total: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        resp = torch.where(torch.isfinite(total), exp(log_joint - total), torch.zeros_like(log_joint))
        return (resp[..., None] * scores).sum(-2)

    def tail_precisions(self, t: Union[int, str]) -> torch.Tensor:
        return torch.cat([c.tail_precisions(t) for c in self.components], dim=0)

    def sample_clean(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        which = categorical(self.weights, n, generator)
        out = torch.empty((n, self.dim), dtype=torch.float64)
        for j, component in enumerate(self.components):
            rows = torch.nonzero(which == j).reshape(-1)
            out[rows] = component.sample_clean(rows.numel(), generator)
        return out
