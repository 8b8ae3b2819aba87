"""The compiled target: :class:`AnnealedTarget` (the density ``p_t`` at every level) and
:func:`compile`, which runs the checks and builds the plan (see :mod:`rrrdsl.compiler`)."""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import torch

from .. import schedules
from ..errors import CompileError, InvalidValueError
from ..lang.ir import Expr, Leaf, Unit, leaves, simplify
from ..models.base import Decoder, Model
from ..schedules import Level, Schedule
from .checks import check_decoders, check_mixtures, check_schedules
from .frames import Canvas, Frame, canvas_shape, frame_atoms
from .plan import Lowering, Normaliser, Values, backward
from .tails import check_normalisable

#: leaf kinds that are exact analytic oracles (they follow the schedule they are given)
EXACT_KINDS = frozenset({"oracle", "gmm", "box"})

class LevelTarget(NamedTuple):
    """An :class:`AnnealedTarget` frozen at one level ``t`` (for pyro's ``HMC``/``NUTS``)."""

    target: "AnnealedTarget"
    t: Level

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.target.log_prob(x, self.t)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.target.score(x, self.t)

    def log_prob_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.target.log_prob_and_grad(x, self.t)

    def potential_fn(self, params: dict) -> torch.Tensor:
        """``-log p_t(params["x"])`` for one point ``x`` of shape ``[D]``: a scalar, differentiable."""
        return -self.target.log_prob(params["x"].unsqueeze(0), self.t).squeeze(0)


class AnnealedTarget:
    """The compiled density ``p_t`` of an energy graph at every level ``t`` of its schedule.

    Built by :func:`compile`; see :mod:`rrrdsl.compiler` for the plan. ``t`` is an int level, a
    per-chain ``LongTensor`` ``[N]``, or ``"clean"`` (passed through to the leaves).

    Attributes
    ----------
    expr
        The simplified graph (without a constant factor).
    dim, canvas
        Dimension of ``x`` and the canvas shape (``(D,)`` or ``(H, W)``).
    num_levels, schedule
        The shared noise schedule.
    has_energy
        True when every leaf has a log density (``log_prob`` is available).
    leaf_models
        Each distinct leaf and the model it resolved to.
    atoms
        Each distinct ``(leaf, crop)`` evaluated per call.
    unnormalised
        The mixture components that are not exactly normalised (anything but an exact oracle
        leaf), each with the shape of the frame it is evaluated on: the mixture's weights mean
        what they say once :meth:`normalise` has attached their ``log Z_t`` (the samplers do,
        :mod:`rrrdsl.samplers.normalisers`).
    normalisers
        The attached :class:`~rrrdsl.compiler.plan.Normaliser` of each such component.
    decoder
        The :class:`~rrrdsl.models.base.Decoder` of samples of latent models (one latent
        diffusion pipeline, :func:`~rrrdsl.compiler.checks.check_decoders`), else None.
    """

    def __init__(
        self, expr: Expr, canvas: tuple[int, ...], schedule: Schedule, leaf_models: dict[Leaf, Model], lowering: Lowering, root_slot: int, decoder: Optional[Decoder] = None
    ) -> None:
        self.expr = expr
        self.decoder = decoder
        self.canvas = canvas
        self.dim = math.prod(canvas)
        self.schedule = schedule
        self.num_levels = schedule.num_levels
        self.leaf_models = leaf_models
        self.atoms = tuple(lowering.atoms.values())
        self.has_energy = all(m.has_energy for m in leaf_models.values())
        self._atom_steps = lowering.atom_steps()
        self._combine = tuple(lowering.combine)
        self._num_slots = lowering.num_slots
        self._root = root_slot
        self.unnormalised = {term: frame.shape for term, frame in lowering.unnormalised.items()}
        self.normalisers = lowering.normalisers  # shared with the mixture steps
        # without mixtures log p is linear in the atoms: the score is a weighted sum of theirs
        self._score_coefs: Optional[dict[int, float]] = None
        if not any(step.kind == "logsumexp" for step in self._combine):
            self._score_coefs = dict(self._combine[-1].terms) if self._combine else {root_slot: 1.0}
        self._steps = tuple(self._atom_steps) + self._combine
        #: every leaf an exact oracle: log p and its gradient in one analytic pass
        self._fused = all(step.fused for step in self._atom_steps)

    def _require_energy(self) -> None:
        if not self.has_energy:
            names = ", ".join(str(leaf) for leaf, m in self.leaf_models.items() if not m.has_energy)
            raise CompileError(
                f"this target has no log density: {names} is score-only (it has no energy)",
                hint="use score(x, t) with an unadjusted sampler, or an energy-parameterised model",
            )

    def log_prob(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``log p_t(x)`` up to a constant per level, shape ``[N]`` (differentiable in ``x``)."""
        self._require_energy()
        values: Values = [None] * self._num_slots
        for step in self._steps:
            step.log_prob(x, t, values)
        return values[self._root]

    def log_prob_and_grad(self, x: torch.Tensor, t: Level) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p_t(x), ∇_x log p_t(x))``: one forward and one backward pass; works under ``no_grad``.

        A graph of exact oracles alone (products, powers, mixtures, crops, in any nesting) skips
        autograd: each oracle gives its log density and score in one analytic pass
        (:meth:`~rrrdsl.models.oracles.Oracle.log_prob_and_score`), and the gradient is their
        sum weighted by the plan's adjoints (:func:`~rrrdsl.compiler.plan.backward`: the graph's
        coefficients, times the responsibilities below a mixture), which halves the work and
        the per-call overhead of the evaluation. A graph with a learned model uses autograd."""
        self._require_energy()
        if self._fused:
            with torch.no_grad():
                values: Values = [None] * self._num_slots
                scores = [step.log_prob_and_score(x, t, values) for step in self._atom_steps]
                adjoints = backward(self._combine, t, values, self._root)
                grad: Optional[torch.Tensor] = None
                for step, score in zip(self._atom_steps, scores):
                    grad = step.add_score(grad, x, adjoints, score)
            return values[self._root], torch.zeros_like(x) if grad is None else grad
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            log_prob = self.log_prob(x, t)
            (grad,) = torch.autograd.grad(log_prob.sum(), x)
        return log_prob.detach(), grad

    def score(self, x: torch.Tensor, t: Level) -> torch.Tensor:
        """``∇_x log p_t(x)``, shape ``[N, D]``: the weighted sum of leaf scores for products and
        powers (score-only leaves allowed), the gradient of ``log_prob`` with mixtures."""
        if self._score_coefs is None:
            return self.log_prob_and_grad(x, t)[1]
        out: Optional[torch.Tensor] = None
        for step in self._atom_steps:
            out = step.score(x, t, out, self._score_coefs)
        return torch.zeros_like(x) if out is None else out

    def normalise(self, normalisers: dict[Expr, Normaliser]) -> None:
        """Attach the ``log Z_t`` tables of the :attr:`unnormalised` mixture components: from
        now on each mixture divides those components by their normalisers."""
        for term, normaliser in normalisers.items():
            if term not in self.unnormalised:
                raise CompileError(f"{term} is not an unnormalised mixture component of this target")
            if normaliser.log_z.shape != (self.num_levels,):
                raise CompileError(f"the normaliser of {term} has {normaliser.log_z.shape} levels, the target {self.num_levels}")
        self.normalisers.update(normalisers)

    def at(self, t: Level) -> LevelTarget:
        """This target at the fixed level ``t``; its ``potential_fn`` plugs into pyro's NUTS."""
        return LevelTarget(self, t)

    def describe(self) -> str:
        """The evaluation plan, one step a line."""
        head = (
            f"AnnealedTarget {self.expr}\n  dim {self.dim} (canvas {'x'.join(map(str, self.canvas))}), "
            f"schedule {self.schedule}, {'energy' if self.has_energy else 'score only'}"
        )
        lines = [head] + [f"  {step.describe()}" for step in self._steps] + [f"  log p = %{self._root}"]
        for term in self.unnormalised:
            normaliser = self.normalisers.get(term)
            state = normaliser.summary() if normaliser else "not yet estimated: its weight acts on the unnormalised term"
            lines.append(f"  Z_t of mixture component {term}: {state}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<AnnealedTarget {self.expr} dim={self.dim} {self.schedule}>"


def compile(
    expr: Expr, schedule: Optional[Schedule] = None, *, canvas: Canvas = None, levels: Optional[Sequence[Level]] = None
) -> AnnealedTarget:
    """Compile the energy graph ``expr`` into an :class:`AnnealedTarget`.

    Parameters
    ----------
    expr
        An energy graph (a constant factor at the root is ignored).
    schedule
        The noise schedule; by default that of the learned models, else
        :func:`rrrdsl.schedules.default`. Exact oracles follow it; learned models must match it.
    canvas
        The canvas for crops: a size ``D`` (``dims=`` crops) or an image shape ``(H, W)``
        (``rows=``/``cols=`` crops). Inferred when omitted: ``H`` the largest ``rows`` stop,
        ``W`` the largest ``cols`` stop (a crop without rows/cols spans that axis), ``D`` the
        dim of the uncropped leaves or the largest ``dims`` stop.
    levels
        The levels at which the target must be normalisable (default: every level and
        ``"clean"``; the noisy ones alone with learned models, whose tails are taken as those
        of noised bounded data: :mod:`rrrdsl.compiler.tails`). Ground truth at one level passes that level alone: a quotient of
        exact boxes such as ``box ** 1.3 / box_small ** 0.3`` is proper at every noisy level
        but infinite at the clean one.

    Raises
    ------
    UnknownNameError, CompileError, ShapeError
        Before anything is evaluated; see :mod:`rrrdsl.compiler`.
    """
    from ..models import registry

    if not isinstance(expr, Expr):
        raise InvalidValueError(f"compile needs an energy graph, got {type(expr).__name__}")
    if schedule is not None and not isinstance(schedule, Schedule):
        raise InvalidValueError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    root = simplify(expr).base
    if isinstance(root, Unit):
        raise CompileError("the graph is a constant: there is no density to compile", hint="compose at least one model")
    graph_leaves = leaves(root)
    learned = {leaf: registry.resolve(leaf, schedule) for leaf in graph_leaves if leaf.kind not in EXACT_KINDS}
    check_schedules(learned, schedule)
    if schedule is None:
        schedule = next(iter(learned.values())).schedule if learned else schedules.default()
    models = {leaf: learned[leaf] if leaf in learned else registry.resolve(leaf, schedule) for leaf in graph_leaves}
    dims = {leaf: m.dim for leaf, m in models.items()}
    shape = canvas_shape(root, canvas, dims)
    frame = Frame(None, shape, "the canvas")
    atoms = frame_atoms(root, frame, dims, inferred=canvas is None)
    decoder = check_decoders(models, math.prod(shape))
    check_mixtures(root, models)
    check_normalisable(root, frame, models, schedule, levels)
    lowering = Lowering(atoms, models, frame.size)
    root_slot = lowering.slot_of(root, frame)
    return AnnealedTarget(root, shape, schedule, models, lowering, root_slot, decoder)
