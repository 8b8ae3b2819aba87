"""What a diffusers network's output means: a prediction (ε, v or x₀) turned into the noise
estimate ``ε̂``, or an energy whose gradient is ``ε̂``.

With ``x_t = √ᾱ_t x₀ + σ_t ε`` and ``σ_t = √(1 - ᾱ_t)`` (diffusers' ``prediction_type``):

* ``epsilon``: the output is ``ε̂``;
* ``v_prediction``: the output is ``v̂ = √ᾱ_t ε - σ_t x₀`` (Salimans & Ho, 2022), so
  ``ε̂ = √ᾱ_t v̂ + σ_t x_t``;
* ``sample``: the output is ``x̂₀``, so ``ε̂ = (x_t - √ᾱ_t x̂₀) / σ_t``.

The score of the noised density is ``∇ log q_t(x) = -ε̂ / σ_t`` (Vincent, 2011; Song et al., 2021).

An energy-parameterised network (Salimans & Ho, 2021; Du et al., 2023, section 3.3, whose
PyTorch port trains these) defines a scalar ``E_θ(x, t)`` from its output ``f = f_θ(x, t)``
and predicts the noise as its gradient, ``ε̂ = ∇_x E_θ``, so that ``log q_t(x) = -E_θ(x, t) / σ_t``
up to a constant per level. :data:`ENERGIES` are the three forms: ``norm`` ``½‖f‖²``, ``inner``
``⟨x, f⟩`` and ``residual`` ``‖x - f‖²``. Energies are trained as ε-predictors.
"""

from __future__ import annotations

from typing import Callable

import torch

#: a prediction turned into ``ε̂``: ``(output, x, alpha_bar, sigma) -> ε̂`` (broadcastable)
Prediction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: diffusers' prediction types -> ``ε̂``
PREDICTIONS: dict[str, Prediction] = {
    "epsilon": lambda output, x, alpha_bar, sigma: output,
    "v_prediction": lambda output, x, alpha_bar, sigma: alpha_bar.sqrt() * output + sigma * x,
    "sample": lambda output, x, alpha_bar, sigma: (x - alpha_bar.sqrt() * output) / sigma,
}


#: energy forms: name -> ``E(x, f)`` per row of ``[B, D]`` inputs
ENERGIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "norm": lambda x, f: 0.5 * f.square().sum(-1),
    "inner": lambda x, f: (x * f).sum(-1),
    "residual": lambda x, f: (x - f).square().sum(-1),
}
