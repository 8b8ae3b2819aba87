"""The 2D zoo's learned models: a :class:`~rrrdsl.zoo.nets.ResidualMLP` in two parameterisations.

* :class:`ScoreModel` (``has_energy=False``): the network predicts the noise,
  ``ε̂ = f_θ(x, t)``, and ``∇_x log q_t(x) = -ε̂ / σ_t`` (Ho et al., 2020; Song et al., 2021).
* :class:`EnergyModel` (``has_energy=True``): a scalar energy
  ``E_θ(x, t) = ½ ‖x - f_θ(x, t)‖²`` (Salimans & Ho, 2021; Du et al., 2023, section 3.3) whose
  input gradient is the noise prediction, ``ε̂ = ∇_x E_θ``. Since ``ε̂ ≈ -σ_t ∇_x log q_t``,
  ``log q_t(x) = -E_θ(x, t) / σ_t`` up to a constant per level, and the score is ``-ε̂ / σ_t``
  by autograd.

Both work in any dimension ``D``; the shipped ones are trained on the named 2D datasets.
"""

from __future__ import annotations

import torch

from ...errors import InvalidValueError, suggest
from ...models.base import Model
from ...schedules import Level, Schedule
from ..nets import ResidualMLP, check_level

#: the parameterisations of a learned model
PARAMS = ("energy", "score")


class NetModel(Model):
    """A diffusion model whose noise prediction ``ε̂(x, t)`` comes from a :class:`ResidualMLP`.

    Subclasses define :meth:`predict_eps`; the score is ``-ε̂ / σ_t`` for both.
    """

    param: str

    def __init__(self, net: ResidualMLP, schedule: Schedule, description: str = "") -> None:
        self.net = net
        self.schedule = schedule
        self.dim = net.dim
        self.description = description or f"learned {self.param} model ({net.width}x{net.depth} MLP)"

    def predict_eps(self, x: torch.Tensor, t: Level, create_graph: bool = False) -> torch.Tensor:
        """The noise prediction ``ε̂(x, t)``, ``[N, D]``; ``create_graph`` keeps it differentiable
        in the parameters and ``x`` (for training)."""
        raise NotImplementedError

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        return -self.predict_eps(x, t) / self.sigma(t, x)

    def sigma(self, t: Level, like: torch.Tensor) -> torch.Tensor:
        """``σ_t`` broadcastable against ``like`` ``[N, D]``; the clean level is rejected."""
        return self.schedule.at(check_level(t, self), like)[1]

    def levels(self, t: Level, x: torch.Tensor) -> torch.Tensor:
        """The level(s) as an integer tensor ``[1]`` or ``[N]`` for the network."""
        t = check_level(t, self)
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return t.to(device=x.device, dtype=torch.long)
        return torch.full((1,), int(t), dtype=torch.long, device=x.device)


class ScoreModel(NetModel):
    """ε-prediction model: ``ε̂ = f_θ(x, t)``, score ``-ε̂ / σ_t``; no energy (Ho et al., 2020)."""

    param = "score"
    has_energy = False

    def predict_eps(self, x: torch.Tensor, t: Level, create_graph: bool = False) -> torch.Tensor:
        return self.net(x, self.levels(t, x))


class EnergyModel(NetModel):
    """Energy model ``E_θ(x, t) = ½ ‖x - f_θ(x, t)‖²`` with ``ε̂ = ∇_x E_θ`` and
    ``log q_t = -E_θ / σ_t`` up to a constant (Salimans & Ho, 2021; Du et al., 2023)."""

    param = "energy"
    has_energy = True

    def energy(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``E_θ(x, t)``, shape ``[N]``, differentiable in ``x``."""
        return 0.5 * (x - self.net(x, self.levels(t, x))).square().sum(-1)

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        return -self.energy(x, t) / self.sigma(t, x).reshape(-1)

    def predict_eps(self, x: torch.Tensor, t: Level, create_graph: bool = False) -> torch.Tensor:
        return self.energy_and_eps(x, t, create_graph)[1]

    def energy_and_eps(self, x: torch.Tensor, t: Level, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E_θ, ∇_x E_θ)`` with one forward and one backward pass."""
        with torch.enable_grad():
            if not (create_graph and x.requires_grad):
                x = x.detach().requires_grad_(True)
            energy = self.energy(x, t)
            (eps,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
        return (energy, eps) if create_graph else (energy.detach(), eps)

    def log_prob_and_grad(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log q_t(x), ∇_x log q_t(x))`` with one forward and one backward pass."""
        energy, eps = self.energy_and_eps(x, t)
        sigma = self.sigma(t, x)
        return -energy / sigma.reshape(-1), -eps / sigma


MODELS = {"energy": EnergyModel, "score": ScoreModel}


def make_model(
    param: str, dim: int, schedule: Schedule, width: int = 128, depth: int = 4, description: str = ""
) -> NetModel:
    """A freshly initialised learned model of parameterisation ``param`` (``"energy"`` or ``"score"``)."""
    return model_class(param)(ResidualMLP(dim, width, depth), schedule, description)


def model_class(param: str) -> type[NetModel]:
    """The :class:`NetModel` subclass for ``param``."""
    if param not in MODELS:
        raise InvalidValueError(
            f"unknown parameterisation {param!r}", hint=suggest(param, MODELS) or "expected 'energy' or 'score'"
        )
    return MODELS[param]
