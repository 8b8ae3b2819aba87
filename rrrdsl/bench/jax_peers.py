"""The peer samplers of ``rrr bench peers``, in JAX, at a fixed gradient budget per particle.

Each peer is a pure function ``(log_density, key, x0, budget) -> (x, gradients)`` of ``N``
starting points ``x0`` ``[N, D]``, jitted once; ``gradients`` ``[N]`` counts every gradient
of the log density each particle's chain evaluated (initial states included):

* **NumPyro NUTS** (Hoffman & Gelman, 2014; NumPyro's multinomial variant with window
  adaptation of step size and diagonal mass), one chain per particle, vectorized with
  ``jax.vmap`` as ``MCMC(chain_method="vectorized")`` does; a chain stops when its next tree
  (at most ``2 ** max_tree_depth - 1`` leapfrog steps) could pass the budget.
* **BlackJAX MALA** (Roberts & Tweedie, 1996) and **HMC** (Neal, 2011; ``L`` leapfrog steps,
  identity mass), ``jax.vmap``-ed chains sharing one step size tuned by dual averaging
  (Hoffman & Gelman, 2014) toward a target acceptance over the first half of the budget.
* **BlackJAX adaptive tempered SMC** (Jasra et al., 2011; the next temperature by bisection
  on the ESS) from ``N(0, I)`` to the target, ``num_mcmc_steps`` MALA or HMC moves per
  temperature with a step size rescaled after each temperature by the moves' acceptance
  (``ε ← ε · exp(acceptance - target)``); the rest of the budget is spent by the same
  kernel at the target, as the MALA/HMC peers do.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

#: target acceptances of the step-size adaptation (Roberts & Rosenthal, 1998; Beskos et al., 2013)
MALA_ACCEPT, HMC_ACCEPT = 0.574, 0.65
#: leapfrog steps of BlackJAX HMC (alone and as SMC moves)
HMC_LEAPFROG = 10
#: NumPyro NUTS: warmup iterations and the largest tree (at most 63 leapfrog steps)
NUTS_WARMUP, NUTS_MAX_TREE_DEPTH = 20, 6
#: tempered SMC: resample to keep this fraction of N as ESS; moves per temperature
SMC_TARGET_ESS, SMC_MOVES = 0.5, 2
#: the starting step size of MALA (a variance, ``x + ε ∇ log p + sqrt(2ε) ξ``) and HMC
INITIAL_STEP = {"mala": 1e-3, "hmc": 1e-2}

Peer = Callable[..., tuple[Any, Any]]


class Kernel(NamedTuple):
    """A BlackJAX kernel with its initialiser, parameters, gradients per step and target acceptance."""

    init: Callable
    step: Callable
    params: Callable[[Any], dict]
    gradients: int
    accept: float


def kernel(name: str) -> Kernel:
    """BlackJAX MALA or HMC (``HMC_LEAPFROG`` leapfrog steps, identity mass) as a :class:`Kernel`."""
    import blackjax
    import jax.numpy as jnp

    if name == "mala":
        return Kernel(blackjax.mala.init, blackjax.mala.build_kernel(), lambda eps: {"step_size": eps}, 1, MALA_ACCEPT)
    return Kernel(
        blackjax.hmc.init,
        blackjax.hmc.build_kernel(),
        lambda eps: {"step_size": eps, "inverse_mass_matrix": jnp.ones(2), "num_integration_steps": HMC_LEAPFROG},
        HMC_LEAPFROG,
        HMC_ACCEPT,
    )


def _chains(log_density: Callable, k: Kernel, key: Any, states: Any, steps: int, eps: float, adapt: int) -> tuple[Any, Any]:
    """``steps`` vmapped kernel steps; the shared step size adapts by dual averaging over the
    first ``adapt`` steps (mean acceptance over chains) and is then frozen at its average."""
    import jax
    import jax.numpy as jnp
    from blackjax.adaptation.step_size import dual_averaging_adaptation

    da_init, da_update, da_final = dual_averaging_adaptation(k.accept)
    n = states.position.shape[0]

    def one(i: Any, carry: tuple) -> tuple:
        states, da = carry
        step_size = jnp.where(i < adapt, jnp.exp(da.log_step_size), da_final(da))
        keys = jax.random.split(jax.random.fold_in(key, i), n)
        states, info = jax.vmap(lambda kk, s: k.step(kk, s, log_density, **k.params(step_size)))(keys, states)
        da = jax.lax.cond(i < adapt, lambda d: da_update(d, info.acceptance_rate.mean()), lambda d: d, da)
        return states, da

    states, da = jax.lax.fori_loop(0, steps, one, (states, da_init(eps)))
    return states, da_final(da)


def mcmc(name: str) -> Peer:
    """The vmapped BlackJAX ``name`` chains as a peer (half the budget adapts the step size)."""

    def run(log_density: Callable, key: Any, x0: Any, budget: int) -> tuple[Any, Any]:
        import jax
        import jax.numpy as jnp

        k = kernel(name)
        steps = (budget - 1) // k.gradients
        states = jax.vmap(lambda x: k.init(x, log_density))(x0)
        states, _ = _chains(log_density, k, key, states, steps, INITIAL_STEP[name], steps // 2)
        return states.position, jnp.full(x0.shape[0], 1 + steps * k.gradients)

    return run


def tempered_smc(name: str) -> Peer:
    """BlackJAX adaptive tempered SMC with ``name`` moves as a peer (see the module docstring)."""

    def run(log_density: Callable, key: Any, x0: Any, budget: int) -> tuple[Any, Any]:
        import blackjax
        import jax
        import jax.numpy as jnp
        from blackjax.smc import resampling

        k = kernel(name)
        key, resample_key, chain_key = jax.random.split(key, 3)

        def log_prior(x: Any) -> Any:
            return -0.5 * (x**2).sum()

        smc = blackjax.smc.adaptive_tempered.build_kernel(
            log_prior, lambda x: log_density(x) - log_prior(x), k.step, k.init, resampling.systematic, SMC_TARGET_ESS
        )
        per_temperature = SMC_MOVES * k.gradients + 1  # the moves, and the kernel's init at each temperature

        def cond(carry: tuple) -> Any:
            state, _, used, _ = carry
            return (state.tempering_param < 1.0) & (used + per_temperature <= budget)

        def body(carry: tuple) -> tuple:
            state, eps, used, i = carry
            params = jax.tree_util.tree_map(lambda p: jnp.asarray(p)[None], k.params(eps))
            state, info = smc(jax.random.fold_in(key, i), state, SMC_MOVES, params)
            eps = eps * jnp.exp(info.update_info.acceptance_rate.mean() - k.accept)
            return state, eps, used + per_temperature, i + 1

        state = blackjax.smc.tempered.init(x0)
        start = (state, jnp.asarray(INITIAL_STEP[name]), jnp.asarray(0), jnp.asarray(0))
        state, eps, used, temperatures = jax.lax.while_loop(cond, body, start)
        steps = (budget - used - 1) // k.gradients
        chosen = resampling.systematic(resample_key, state.weights, x0.shape[0])  # the last weights
        states = jax.vmap(lambda x: k.init(x, log_density))(state.particles[chosen])
        states, _ = _chains(log_density, k, chain_key, states, steps, eps, steps // 2)
        return states.position, jnp.full(x0.shape[0], used + 1 + steps * k.gradients)

    return run


def numpyro_nuts(log_density: Callable, key: Any, x0: Any, budget: int) -> tuple[Any, Any]:
    """NumPyro NUTS, one chain per particle (vectorized), until the budget (see the module docstring)."""
    import jax
    from numpyro.infer import NUTS

    nuts = NUTS(potential_fn=lambda x: -log_density(x), max_tree_depth=NUTS_MAX_TREE_DEPTH)
    largest = 2**NUTS_MAX_TREE_DEPTH - 1

    def chain(key: Any, x: Any) -> tuple[Any, Any]:
        state = nuts.init(key, NUTS_WARMUP, init_params=x, model_args=(), model_kwargs={})

        def body(carry: tuple) -> tuple:
            state, used = carry
            state = nuts.sample(state, (), {})
            return state, used + state.num_steps

        state, used = jax.lax.while_loop(lambda c: c[1] + largest <= budget, body, (state, 1))
        return state.z, used

    return jax.vmap(chain)(jax.random.split(key, x0.shape[0]), x0)
