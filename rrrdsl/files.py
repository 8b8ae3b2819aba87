"""Atomic file output shared by every stage that writes (samples, plots, checkpoints, benchmarks)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


def write_atomic(path: Union[str, Path], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    The directory is created if needed. Readers see the old file or the complete new one; an
    interruption (``KeyboardInterrupt`` included) leaves no temporary file behind. The file gets
    permissions ``mode``: world-readable (0644) by default, since outputs and checkpoints are
    shared; a rewritten source file keeps its own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
