"""Value types of ``rrr train``'s flags: each refuses what would train nothing or train garbage.

argparse calls them on the flag's text; a refusal is argparse's usage error (exit 2) naming the
flag, before any data is loaded or any network is built.
"""

from __future__ import annotations

import argparse
import math

#: the largest seed (torch seeds are unsigned 64-bit; one bit kept for signed storage)
MAX_SEED = 2**63 - 1


def count(text: str) -> int:
    """A whole number >= 1 (steps, threads, batch size, width, depth)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def seed(text: str) -> int:
    """A seed: a whole number in [0, 2**63 - 1]."""
    value = _integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number in [0, 2**63 - 1], got {text}")
    return value


def positive(text: str) -> float:
    """A finite real number > 0 (a learning rate)."""
    value = _real(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative(text: str) -> float:
    """A finite real number >= 0 (a loss weight; 0 turns the loss off)."""
    value = _real(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def _real(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value
