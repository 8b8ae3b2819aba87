"""A compiled 2D oracle composition at one level, written in JAX for the peer samplers.

:func:`jax_log_density` walks a compiled target's simplified graph (``target.expr``) and the
oracles its leaves resolved to (``target.leaf_models``) and builds ``log p_t(x)`` for one point
``x`` ``[D]`` as a JAX function, so that any product, power or mixture of Gaussian-mixture and
box oracles ports without hand-written targets:

* a Gaussian mixture at level ``t``: ``logsumexp_k(log π_k + log N(x; sqrt(ᾱ_t) μ_k,
  diag(ᾱ_t s_k^2 + σ_t^2)))``;
* a box: ``Σ_d log(Φ(m_d + h_d) - Φ(m_d - h_d)) - log(sqrt(ᾱ_t) (b_d - a_d))``, the log normal
  mass of an interval evaluated as :func:`rrrdsl.models.oracles.log_normal_interval` does
  (log-CDFs in the left tail, the Hermite series where they cancel);
* a mixture of oracles and a ``Mixture`` node: ``logsumexp_j(log w_j + log q^j_t)``; a product
  sums the logs of its terms and a power scales its term's log by the exponent.

The score is ``jax.grad`` of the result. JAX is imported lazily with one thread
(:func:`import_jax`), so the rest of ``rrr bench`` runs without it.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np

from ..errors import CompileError, RrrdslError
from ..lang.ir import Expr, Leaf, Mixture, Power, Product
from ..models.oracles import Box, GaussianMixture, OracleMixture

#: the packages of the ``peers`` extra
PEER_PACKAGES = ("jax", "numpyro", "blackjax")
#: XLA on one host device without its thread pools (the torch side runs with one thread)
ONE_THREAD_XLA = "--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

LogDensity = Callable[[Any], Any]


def import_jax() -> Any:
    """Import JAX single-threaded (float32 unless the caller enables float64); raise :class:`RrrdslError` with one line
    when a package of the ``peers`` extra is missing."""
    os.environ.setdefault("XLA_FLAGS", ONE_THREAD_XLA)
    try:
        import blackjax  # noqa: F401
        import jax
        import numpyro  # noqa: F401
    except ImportError as error:
        raise RrrdslError(f"needs the peers extra ({', '.join(PEER_PACKAGES)}; pip install -e '.[peers]'): {error}") from None
    return jax


def _level(model: Any, t: int) -> tuple[float, float]:
    """``(alpha_bar_t, sigma_t)`` of the model's schedule as Python floats."""
    import torch

    alpha_bar, sigma = model.schedule.at(t, torch.empty((), dtype=torch.float64))
    return float(alpha_bar), float(sigma)


def _log_normal_interval(m: Any, h: Any) -> Any:
    """``log(Φ(m + h) - Φ(m - h))`` in JAX, the algorithm of
    :func:`rrrdsl.models.oracles.log_normal_interval` (both branches on safe inputs)."""
    import jax.numpy as jnp
    from jax.scipy.special import log_ndtr

    a = jnp.abs(m)
    series = h * jnp.maximum(a, 1.0) < jnp.finfo(m.dtype).eps ** (1.0 / 7.0)
    h_direct = jnp.where(series, 1.0, h)
    log_u, log_v = log_ndtr(h_direct - a), log_ndtr(-h_direct - a)
    z = log_v - log_u  # <= 0: log(1 - exp(z)) as in Mächler (2012)
    near = z > -math.log(2.0)
    log1mexp = jnp.where(near, jnp.log(-jnp.expm1(jnp.where(near, z, -1.0))), jnp.log1p(-jnp.exp(jnp.where(near, -1.0, z))))
    h_series = jnp.where(series, h, 1.0)
    h2, m2 = h_series**2, m**2
    hermite = (m2 - 1.0) * h2 / 6.0 + (m2 * m2 - 6.0 * m2 + 3.0) * h2 * h2 / 120.0
    expansion = jnp.log(2.0 * h_series) - 0.5 * m2 - 0.5 * math.log(2 * math.pi) + jnp.log1p(hermite)
    return jnp.where(series, expansion, log_u + log1mexp)


def _gmm(model: GaussianMixture, t: int) -> LogDensity:
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    alpha_bar, sigma = _level(model, t)
    var = alpha_bar * model.std.numpy() ** 2 + sigma**2  # [K, D]
    means = math.sqrt(alpha_bar) * model.means.numpy()
    const = np.log(model.weights.numpy()) - 0.5 * np.log(var).sum(-1) - 0.5 * model.dim * math.log(2 * math.pi)

    def log_prob(x: Any) -> Any:
        diff = x - jnp.asarray(means, x.dtype)
        return logsumexp(jnp.asarray(const, x.dtype) - 0.5 * (diff**2 / jnp.asarray(var, x.dtype)).sum(-1))

    return log_prob


def _box(model: Box, t: int) -> LogDensity:
    import jax.numpy as jnp

    alpha_bar, sigma = _level(model, t)
    r = math.sqrt(alpha_bar)
    low, high = model.low.numpy(), model.high.numpy()
    centre, half = r * 0.5 * (low + high), r * 0.5 * (high - low) / sigma
    log_width = np.log(r * (high - low))

    def log_prob(x: Any) -> Any:
        m = (x - jnp.asarray(centre, x.dtype)) / jnp.asarray(sigma, x.dtype)
        return (_log_normal_interval(m, jnp.asarray(half, x.dtype)) - jnp.asarray(log_width, x.dtype)).sum()

    return log_prob


def _mixture(parts: list[LogDensity], weights: Any) -> LogDensity:
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    log_weights = np.log(np.asarray(weights, dtype=np.float64))
    return lambda x: logsumexp(jnp.stack([f(x) for f in parts]) + jnp.asarray(log_weights, x.dtype))


def _oracle(model: Any, t: int) -> LogDensity:
    if isinstance(model, GaussianMixture):
        return _gmm(model, t)
    if isinstance(model, Box):
        return _box(model, t)
    if isinstance(model, OracleMixture):
        return _mixture([_oracle(c, t) for c in model.components], model.weights.numpy())
    raise CompileError(f"the JAX port covers Gaussian-mixture and box oracles, not {model.description or type(model).__name__}")


def _node(node: Expr, models: dict, t: int) -> LogDensity:
    match node:
        case Leaf():
            return _oracle(models[node], t)
        case Product(terms=terms):
            parts = [_node(term, models, t) for term in terms]
            return lambda x: sum(f(x) for f in parts)
        case Power(term=term, exponent=exponent):
            inner = _node(term, models, t)
            return lambda x: exponent * inner(x)
        case Mixture(terms=terms, weights=weights):
            return _mixture([_node(term, models, t) for term in terms], weights)
    raise CompileError(f"the JAX port has no rule for {type(node).__name__} nodes ({node})")


def jax_log_density(target: Any, t: int = 0) -> LogDensity:
    """``log p_t(x)`` of a compiled target for one point ``x`` ``[D]``, as a JAX function.

    Parameters
    ----------
    target
        An :class:`~rrrdsl.compiler.AnnealedTarget` whose leaves are Gaussian-mixture or box
        oracles (named, ``gmm`` or ``box``, and mixtures of those), without crops.
    t
        The level (an int).

    Raises
    ------
    CompileError
        A leaf that is not such an oracle, or a node with no JAX rule (a crop).
    """
    import_jax()
    return _node(target.expr, dict(target.leaf_models), int(t))
