"""Particles sharded over processes: the process-group facts and the collectives samplers need.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment, or a process group the caller has
already initialised) each of the ``W`` processes ("ranks") holds a contiguous shard of the
``N`` particles (``N`` split as evenly as possible) and draws its own random numbers from a
seed derived from ``(seed, rank)``. Particles are independent except where SMC couples them
(normalised weights, ESS, resampling, log Z) and where step-size adaptation pools acceptance;
those steps call the functions of a :class:`Group`:

* :meth:`Group.logsumexp`, :meth:`Group.ess`, :meth:`Group.log_mean_weight`,
  :meth:`Group.mean`: reductions over all particles of all ranks;
* :meth:`Group.resample`: global systematic resampling (Kitagawa, 1996) with one uniform
  shared by every rank, as a :class:`Resampling` plan that :meth:`Group.exchange` applies to any
  per-particle tensor: each rank keeps its shard size and the particles move between ranks with
  one ``all_to_all`` per tensor;
* :meth:`Group.gather`: every rank's rows, in rank order, on rank 0 alone (the others keep
  their own), so that no process but rank 0 holds the whole sample.

The base class :class:`Group` is the single process: its four primitives (``_reduce``,
``_gather``, ``_broadcast``, ``_all_to_all``) are the identity and everything else is written
once on top of them, so a sampler calls the same functions with one process or many. What
every rank needs of every other (shard sizes, total weights) travels as a sum of one-hot
vectors (:meth:`Group.each`).
:class:`ProcessGroup` implements the primitives with :mod:`torch.distributed` (gloo on the CPU,
NCCL for CUDA tensors).

Faults: a rank whose run raises calls :meth:`Group.fail` (:func:`failing_together` does it),
which records the first error's message in the process group's key-value store and closes its
connections; a rank waiting in a collective then gets a broken connection at once (or the
process group's timeout, :data:`TIMEOUT_ENV`, when the failed rank hangs) and raises
:class:`~rrrdsl.errors.SamplerError` with that first message. No rank waits forever. A rank that
ends normally leaves the process group at exit (:func:`start` registers it), since gloo's
threads abort the interpreter's exit otherwise.
"""

from __future__ import annotations

import atexit
import math
import os
import re
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator, NamedTuple, Optional

import torch

from ..errors import RrrdslError, SamplerError

#: environment variable: seconds a rank waits in a collective for the others (default 600)
TIMEOUT_ENV = "RRR_DIST_TIMEOUT"
#: key of the first error's message in the process group's store
ERROR_KEY = "rrrdsl/first-error"


class Resampling(NamedTuple):
    """A global resampling step as seen by one rank.

    ``order`` are the local indices of the ancestors this rank sends, in the global order of
    their children; ``send[q]`` / ``receive[q]`` count the particles sent to / received from
    rank ``q`` (``sum(receive)`` is the shard size) and ``rank`` is this rank.
    """

    order: torch.Tensor
    send: list[int]
    receive: list[int]
    rank: int

    @property
    def moved(self) -> int:
        """The particles this rank received from other ranks."""
        return sum(self.receive) - self.receive[self.rank]


class Group:
    """One process holding every particle: each collective is the identity."""

    rank = 0
    world = 1

    # --- the facts --------------------------------------------------------------------------
    def shard(self, n: int) -> range:
        """This rank's particles ``[n * rank // W, n * (rank + 1) // W)`` of ``n``; :class:`SamplerError`
        when ``n < W`` (a rank would hold none)."""
        if n < self.world:
            raise SamplerError(
                f"n={n} particles cannot be shared among {self.world} processes",
                hint=f"sample at least n={self.world}, or start fewer processes",
            )
        return range(*self._shard_bounds(n, self.rank))

    def seed(self, seed: int) -> int:
        """The seed of this rank's generator: ``seed`` itself for one process; with several, the
        first 64 bits of NumPy's ``SeedSequence(seed, spawn_key=(rank,))`` (independent streams
        per rank, the same for the same ``(seed, rank)``)."""
        if self.world == 1:
            return seed
        import numpy as np

        return int(np.random.SeedSequence(seed, spawn_key=(self.rank,)).generate_state(1, np.uint64)[0])

    def device(self, device: torch.device) -> torch.device:
        """Where this rank samples: ``cuda`` without an index is the rank's local GPU
        (``LOCAL_RANK``), made the current device for NCCL; :class:`SamplerError` when the
        machine has fewer GPUs than processes."""
        if device.type == "cuda" and device.index is None and self.world > 1:
            local, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local >= count:
                raise SamplerError(
                    f"process {self.rank} of {self.world} would sample on cuda:{local}, but this machine has {count} GPU(s)",
                    hint="start one process per GPU: torchrun --nproc_per_node=gpu",
                )
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return device

    # --- the primitives (the identity here) -------------------------------------------------
    def _reduce(self, values: torch.Tensor, op: str) -> torch.Tensor:
        """Elementwise ``op`` (``"sum"``, ``"max"``, ``"min"``) over ranks."""
        return values

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        """On rank 0, every rank's ``rows`` (leading dimensions may differ) concatenated in rank
        order; on the others, their own ``rows``."""
        return rows

    def _broadcast(self, value: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``value`` on every rank."""
        return value

    def _all_to_all(self, rows: torch.Tensor, send: list[int], receive: list[int]) -> torch.Tensor:
        """Send ``rows`` in consecutive blocks of ``send[q]`` rows to rank ``q``; the blocks received."""
        return rows

    # --- reductions -------------------------------------------------------------------------
    def each(self, value: float) -> torch.Tensor:
        """Every rank's ``value``, ``[W]`` float64 in rank order, on every rank: the sum of
        one-hot vectors (exact, since every other term is zero)."""
        one_hot = torch.zeros(self.world, dtype=torch.float64)
        one_hot[self.rank] = value
        return self._reduce(one_hot, "sum")

    def total(self, n: int) -> int:
        """The sum of ``n`` over ranks (the global number of particles)."""
        return int(self._reduce(torch.tensor([n], dtype=torch.float64), "sum"))

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over ranks (float64)."""
        return self._reduce(values.to(torch.float64), "sum")

    def extreme(self, values: torch.Tensor, op: str) -> torch.Tensor:
        """Elementwise ``"min"`` or ``"max"`` over ranks (float64)."""
        return self._reduce(values.to(torch.float64), op)

    def mean(self, values: torch.Tensor) -> float:
        """The mean of ``values`` ``[n]`` over every particle of every rank (NaN counts as 0:
        a non-finite acceptance probability is a rejection)."""
        return self.row_means(values.reshape(1, -1))[0]

    def row_means(self, values: torch.Tensor) -> list[float]:
        """:meth:`mean` of each row of ``values`` ``[K, n]``, in one reduction."""
        local = torch.nan_to_num(values, nan=0.0).sum(dim=-1, dtype=torch.float64)
        both = self._reduce(torch.cat([local, local.new_full((1,), values.shape[-1])]), "sum").tolist()
        count = both[-1]
        return [total / count if count else math.nan for total in both[:-1]]

    def logsumexp(self, log_w: torch.Tensor) -> float:
        """``log Σ exp(log_w)`` over every particle (``-inf`` when every term vanishes)."""
        return self.logsumexps(log_w.reshape(1, -1))[0]

    def logsumexps(self, rows: torch.Tensor) -> list[float]:
        """:meth:`logsumexp` of each row of ``rows`` ``[K, n]``, in two reductions and one host read."""
        rows = rows.to(torch.float64)
        local_top = rows.amax(dim=-1) if rows.shape[-1] else rows.new_full(rows.shape[:1], -math.inf)
        top = self.extreme(local_top, "max")
        sums = self.sum(torch.exp(rows - top[:, None]).sum(dim=-1))
        tops, totals = torch.stack([top, sums]).tolist()
        return [high if high == -math.inf else high + math.log(total) for high, total in zip(tops, totals)]

    def ess(self, log_w: torch.Tensor) -> float:
        """``(Σ w)^2 / Σ w^2`` over every particle (0 when every weight vanished)."""
        first, second = self.logsumexps(torch.stack([log_w, 2 * log_w]))
        return 0.0 if first == -math.inf else math.exp(2 * first - second)

    def log_mean_weight(self, log_w: torch.Tensor) -> float:
        """``log((1/N) Σ w)`` over every particle: one resampling epoch's factor of ``Z``."""
        return self.logsumexp(log_w) - math.log(self.total(log_w.shape[0]))

    def all_equal(self, log_w: torch.Tensor) -> bool:
        """Whether every log-weight of every rank is the same."""
        ends = torch.stack([log_w.min(), -log_w.max()]).to(torch.float64)
        low, minus_high = self.extreme(ends, "min").tolist()
        return low == -minus_high

    # --- resampling and exchange ------------------------------------------------------------
    def resample(
        self, log_w: torch.Tensor, generator: Optional[torch.Generator], order: Optional[torch.Tensor] = None
    ) -> Resampling:
        """Global systematic resampling of the particles with log-weights ``log_w`` (Kitagawa, 1996).

        Output ``j`` of ``N`` takes the ancestor whose cumulative normalised weight interval
        ``[c_{i-1}, c_i)`` holds ``(u + j) / N``, with one uniform ``u`` drawn by rank 0 and
        shared. The weights are accumulated over the ranks in rank order and, within a rank, in
        ``order`` (a permutation of its rows; default their storage order: see
        :mod:`rrrdsl.samplers.ordering`), and the children come out in that order. Each rank knows every rank's total weight (one gather of ``W`` numbers), hence
        which outputs its own particles produce (a contiguous range, ``ceil(c N - u)`` counts the
        outputs below ``c``) and which rank owns each output (the shards of :meth:`shard`): the
        plan sends each child to its owner, so every rank keeps its shard size.
        """
        log_w = log_w.to(torch.float64)
        n_local = log_w.shape[0]
        order = torch.arange(n_local, device=log_w.device) if order is None else order
        log_w = log_w[order]
        n = self.total(n_local)
        u = float(self._broadcast(torch.rand((1,), generator=generator, dtype=torch.float64, device=log_w.device))[0])
        local_total = torch.logsumexp(log_w, 0)
        totals = self.each(float(local_total)).to(log_w.device)
        bounds = _cumulative(torch.exp(totals - totals.max()))  # [W + 1], ends 0 and 1 (relative: log totals below -745 underflow)
        lo, hi = float(bounds[self.rank]), float(bounds[self.rank + 1])
        cumulative = lo + (hi - lo) * _cumulative(torch.exp(log_w - local_total))[1:] if hi > lo else torch.full_like(log_w, lo)
        cumulative[-1] = hi

        def below(c: torch.Tensor) -> torch.Tensor:
            return torch.ceil(c * n - u).clamp(0, n).to(torch.int64)

        counts = torch.diff(below(cumulative), prepend=below(torch.tensor([lo], dtype=torch.float64, device=log_w.device)))
        children = torch.repeat_interleave(order, counts)
        first = below(bounds).tolist()  # rank p's children are the outputs first[p]..first[p+1]-1
        shards = [self._shard_bounds(n, q) for q in range(self.world)]
        send = [_overlap((first[self.rank], first[self.rank + 1]), shard) for shard in shards]
        receive = [_overlap((first[p], first[p + 1]), shards[self.rank]) for p in range(self.world)]
        return Resampling(children, send, receive, self.rank)

    def _shard_bounds(self, n: int, rank: int) -> tuple[int, int]:
        """``[n * rank // W, n * (rank + 1) // W)``: sizes differ by at most one."""
        return n * rank // self.world, n * (rank + 1) // self.world

    def exchange(self, rows: torch.Tensor, plan: Resampling) -> torch.Tensor:
        """Apply a :class:`Resampling` plan to a per-particle tensor (leading dimension the shard)."""
        chosen = rows[plan.order]
        if rows.dtype == torch.bool:  # gloo cannot send booleans
            return self._all_to_all(chosen.to(torch.uint8), plan.send, plan.receive).to(torch.bool)
        return self._all_to_all(chosen, plan.send, plan.receive)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's rows in rank order on rank 0 (the full sample after a run); every other
        rank gets its own ``rows`` back, so that its memory does not grow with the world size."""
        return self._gather(rows)

    def barrier(self) -> None:
        """Wait for every rank (a rank that failed makes the others raise here)."""
        self._reduce(torch.zeros(1, dtype=torch.float64), "sum")

    # --- faults -----------------------------------------------------------------------------
    def fail(self, error: BaseException) -> None:
        """Tell the other ranks that this one stopped with ``error`` (nothing to do alone)."""


def _cumulative(weights: torch.Tensor) -> torch.Tensor:
    """``[0, c_1, ..., c_n]``: the normalised cumulative sums of non-negative ``weights``, the last
    exactly 1 (divided by the total, so trailing zero weights end exactly at 1 too)."""
    sums = torch.cumsum(weights, 0)
    return torch.cat([torch.zeros(1, dtype=sums.dtype, device=sums.device), sums / sums[-1]])


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


class PeerFailure(SamplerError):
    """Another rank stopped: the message is the first error of the run (or a lost connection)."""


class ProcessGroup(Group):
    """The ranks of the default :mod:`torch.distributed` process group."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.failed: Optional[str] = None

    def _collective(self, call, *args):
        if self.failed is not None:
            raise PeerFailure(self.failed)
        try:
            return call(*args)
        except RuntimeError as error:  # a closed connection, a timeout: another rank stopped
            self.failed = self._first_error() or self._lost(error)
            raise PeerFailure(self.failed) from None

    def _lost(self, error: RuntimeError) -> str:
        """The message of a collective that failed with no first error recorded: the peer was
        killed (a closed connection) or hung (the process group's timeout). With two processes
        the peer is named; the backend's own words (less its source location and advice) say which."""
        peer = f"process {1 - self.rank} of 2" if self.world == 2 else f"another of the {self.world} processes"
        reason = re.sub(r"^\[[^\]]*\] ", "", str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        reason = reason.split(". This is typically")[0]
        return (
            f"process {self.rank} of {self.world} lost contact with {peer} during a collective: it was killed, or it "
            f"hung for longer than the process group's timeout ({TIMEOUT_ENV}) ({reason})"
        )

    def _first_error(self) -> Optional[str]:
        try:
            store = self.dist.distributed_c10d._get_default_store()
            return store.get(ERROR_KEY).decode() if store.check([ERROR_KEY]) else None
        except (RuntimeError, ValueError):
            return None

    def _reduce(self, values: torch.Tensor, op: str) -> torch.Tensor:
        ops = {"sum": self.dist.ReduceOp.SUM, "max": self.dist.ReduceOp.MAX, "min": self.dist.ReduceOp.MIN}
        values = values.clone()
        self._collective(self.dist.all_reduce, values, ops[op])
        return values

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        sizes = self.each(rows.shape[0]).to(torch.int64).tolist()
        padded = rows
        if rows.shape[0] < max(sizes):  # gather needs one shape: pad the shorter shards
            padded = torch.zeros((max(sizes), *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
            padded[: rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world)] if self.rank == 0 else None
        self._collective(self.dist.gather, padded.contiguous(), parts, 0)
        return torch.cat([part[:size] for part, size in zip(parts, sizes)]) if parts is not None else rows

    def _broadcast(self, value: torch.Tensor) -> torch.Tensor:
        value = value.clone()
        self._collective(self.dist.broadcast, value, 0)
        return value

    def _all_to_all(self, rows: torch.Tensor, send: list[int], receive: list[int]) -> torch.Tensor:
        out = torch.empty((sum(receive), *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        self._collective(self.dist.all_to_all_single, out, rows.contiguous(), receive, send)
        return out

    def fail(self, error: BaseException) -> None:
        """Record ``error`` as the run's first error (unless one is recorded) and close this
        rank's connections, so that the others stop at their next collective."""
        if self.failed is None and not isinstance(error, PeerFailure):
            text = error.message if isinstance(error, RrrdslError) else f"{type(error).__name__}: {error}"
            self.failed = f"process {self.rank} of {self.world} failed: {text}"
            try:
                store = self.dist.distributed_c10d._get_default_store()
                store.compare_set(ERROR_KEY, "", self.failed)
            except (RuntimeError, ValueError):
                pass
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


_GROUP: Optional[Group] = None


def start(required: bool = False) -> Group:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) when ``WORLD_SIZE > 1``, or use the one
    the caller initialised; else one process. ``required``: :class:`SamplerError` when there
    is no such environment (``rrr run --distributed`` outside ``torchrun``)."""
    global _GROUP
    import torch.distributed as dist

    cached = _GROUP is not None and (isinstance(_GROUP, ProcessGroup) or not dist.is_initialized())
    if not cached:
        if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
            atexit.register(_leave)
        _GROUP = ProcessGroup() if dist.is_initialized() else Group()
    if required and not isinstance(_GROUP, ProcessGroup):
        raise SamplerError(
            "--distributed needs the environment torchrun sets (RANK, WORLD_SIZE > 1, MASTER_ADDR, MASTER_PORT)",
            hint="start it with: torchrun --standalone --nproc_per_node=2 -m rrrdsl.cli run SCRIPT",
        )
    return _GROUP


def timeout_seconds() -> float:
    """The seconds a rank waits in a collective for the others: :data:`TIMEOUT_ENV`, default 600;
    :class:`SamplerError` unless it is a positive number."""
    text = os.environ.get(TIMEOUT_ENV, "600")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise SamplerError(f"{TIMEOUT_ENV}={text!r} is not a positive number of seconds", hint=f"for example {TIMEOUT_ENV}=600")
    return seconds


def _leave() -> None:
    """Leave the process group at exit (gloo's threads abort the exit of a process that has not)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> Group:
    """The group samplers use: the one :func:`start` joined (it starts it on first use)."""
    return start()


@contextmanager
def failing_together() -> Iterator[Group]:
    """Run a block on every rank; an exception in it is first told to the others (:meth:`Group.fail`)."""
    group = current()
    try:
        yield group
    except BaseException as error:
        group.fail(error)
        raise
