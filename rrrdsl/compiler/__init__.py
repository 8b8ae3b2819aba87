"""Compile an energy graph into an :class:`AnnealedTarget`: one differentiable density per level.

An energy graph (:mod:`rrrdsl.lang.ir`) denotes, at every noise level ``t``, the unnormalised
density of the composition of its leaves' noised marginals (Du et al., 2023, "Reduce, Reuse,
Recycle", section 3)::

    Product / Power / quotient   log p_t(x) = Σ_i w_i log q^i_t(x)          (scores likewise)
    Mixture                      log p_t(x) = logsumexp_j(log π_j + log p^j_t(x) - log Z^j_t)
    View (crop)                  log p_t(x) = log p^term_t(x[crop])          (gradient flows back)

:func:`compile` simplifies the graph, runs every check before anything is evaluated, resolves
the leaves through :func:`rrrdsl.models.registry.resolve`, and builds a flat evaluation plan
once:

1. **Atoms.** Each distinct ``(leaf, crop)`` pair is one slot, evaluated once per call however
   often the graph uses it (common-subexpression elimination; repeated subgraphs share slots
   too). All atoms of one conditional :class:`~rrrdsl.models.base.Backbone` are evaluated in a
   single batched call, their crops gathered into one ``[C, N, d]`` input.
2. **Combinations.** Products and powers collapse into one weighted sum of slots per subgraph;
   mixtures become a ``logsumexp`` over their components' slots with log weights, each
   component that is not an exact oracle divided by its per-level normaliser ``Z^j_t`` once
   the samplers have estimated and attached it (:attr:`AnnealedTarget.unnormalised`,
   :meth:`AnnealedTarget.normalise`, :mod:`rrrdsl.samplers.normalisers`); until then the
   weights act on the unnormalised terms.

``log_prob_and_grad`` runs the plan once forward and once backward: by hand when every leaf is
an exact oracle (each oracle's fused log density and score, weighted by the plan's adjoints, the
responsibilities below a mixture: :func:`~rrrdsl.compiler.plan.backward`), else by autograd. ``score`` of a
graph without mixtures is the weighted sum of the leaves' own scores (no energy needed, so
score-only leaves work under products and powers); with mixtures it is the gradient of the
log density.

Checks (each raises before any evaluation):

* unknown model names (the registry's :class:`~rrrdsl.errors.UnknownNameError`, passed on);
* leaf schedules that disagree with each other or with the ``schedule`` argument
  (:class:`~rrrdsl.errors.CompileError`);
* leaves of different dimension, a crop outside the canvas, a crop whose leaves do not match
  its size (:class:`~rrrdsl.errors.ShapeError`);
* a mixture over a score-only leaf: a mixture weighs its components by their densities
  (:class:`~rrrdsl.errors.CompileError`);
* an oracle composition that is not normalisable at some level (:func:`check_normalisable`;
  only when every leaf is an exact oracle: a learned model's tails are unknown).

The package follows these jobs: :mod:`~rrrdsl.compiler.frames` (the canvas and crops),
:mod:`~rrrdsl.compiler.checks` (schedules, mixtures), :mod:`~rrrdsl.compiler.tails` (the
normalisability proof), :mod:`~rrrdsl.compiler.plan` (atoms and combination steps) and
:mod:`~rrrdsl.compiler.target` (:class:`AnnealedTarget` and :func:`compile`).
"""

from .frames import Frame
from .tails import check_normalisable
from .target import EXACT_KINDS, AnnealedTarget, LevelTarget, compile

__all__ = ["EXACT_KINDS", "AnnealedTarget", "Frame", "LevelTarget", "check_normalisable", "compile"]
