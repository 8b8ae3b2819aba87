"""Option checks shared by the sampling entry point and the kernels, with one wording.

Every check raises :class:`~rrrdsl.errors.SamplerError` before any work is done, worded as

    option 'leapfrog' must be an integer >= 1, got 0
    option 'damping' must be a number in [0, 1), got 1.0
    option 'mh' must be one of 'exact' or 'line_integral', got 'exakt'   (hint: did you mean ...?)

and a name that does not exist at all (a sampler, an option) as ``unknown sampler 'mlaa'`` /
``unknown option 'stpes' for sampler 'mala'`` with the nearest names as the hint.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any, NoReturn, Optional

from ..errors import SamplerError, suggest


def fail(option: str, expected: str, value: Any, hint: Optional[str] = None) -> NoReturn:
    """Raise the one error of a bad option value: ``option 'x' must be <expected>, got <value>``."""
    raise _about(option, SamplerError(f"option {option!r} must be {expected}, got {value!r}", hint=hint))


def _about(option: str, error: SamplerError) -> SamplerError:
    """``error``, naming the ``option`` at fault (:attr:`SamplerError.option`)."""
    error.option = option
    return error


def check_known(kind: str, name: Any, known: Collection[str]) -> None:
    """Reject a ``name`` of the given ``kind`` (``"sampler"``, ``"option 'x' for ..."``) not in ``known``."""
    if name not in known:
        hint = suggest(str(name), known) or f"known: {', '.join(known)}"
        raise SamplerError(f"unknown {kind} {name!r}", hint=hint)


def check_names(options: Collection[str], allowed: Collection[str], where: str) -> None:
    """Every option name is one of ``allowed`` (``where``: e.g. ``"sampler 'mala'"``)."""
    for name in options:
        if name not in allowed:
            hint = suggest(name, allowed) or "known options: " + ", ".join(sorted(allowed))
            raise _about(name, SamplerError(f"unknown option {name!r} for {where}", hint=hint))


def check_int(option: str, value: Any, low: int, high: Optional[int] = None) -> int:
    """An integer (not a bool) in ``low..high`` (``high=None``: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        fail(option, f"an integer >= {low}" if high is None else f"an integer in {low}..{high}", value)
    return value


def check_real(
    option: str, value: Any, low: float = -math.inf, high: float = math.inf, *, closed: tuple[bool, bool] = (True, True)
) -> float:
    """A finite real number (not a bool) in the interval from ``low`` to ``high``.

    ``closed`` says whether each end belongs to the interval: ``(True, False)`` is ``[low, high)``.
    """
    real = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    above = real and (value >= low if closed[0] else value > low)
    below = real and (value <= high if closed[1] else value < high)
    if not (above and below):
        fail(option, _interval(low, high, closed), value)
    return float(value)


def check_choice(option: str, value: Any, choices: Sequence[Any]) -> Any:
    """One of ``choices`` (strings, possibly ``None``), with a 'did you mean' hint."""
    if value not in choices:
        names = [c for c in choices if isinstance(c, str)]
        listed = [repr(c) for c in choices]
        expected = "one of " + (", ".join(listed[:-1]) + " or " + listed[-1] if len(listed) > 1 else listed[0])
        fail(option, expected, value, hint=suggest(str(value), names))
    return value


def _interval(low: float, high: float, closed: tuple[bool, bool]) -> str:
    if math.isinf(low) and math.isinf(high):
        return "a finite number"
    if math.isinf(high):
        return f"a finite number {'>=' if closed[0] else '>'} {low:g}"
    if math.isinf(low):
        return f"a finite number {'<=' if closed[1] else '<'} {high:g}"
    return f"a number in {'[' if closed[0] else '('}{low:g}, {high:g}{']' if closed[1] else ')'}"
