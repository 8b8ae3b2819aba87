"""Files: atomic writes, outputs confined to their folder, size-limited reads.

Shared by every stage that writes (samples, plots, checkpoints, benchmarks) or reads a script.

- :func:`write_atomic` writes one file through a temporary file and a rename.
- :func:`write_together` commits several files as one unit, the last one being the unit's
  commit marker (a sample's ``.json``): whenever the marker exists, every other file of the
  unit beside it is the one written with it.
- :func:`output_path` turns a script's output name into a path inside the output folder,
  refusing names that would leave it (``..``, absolute paths, symlinked folders) and names a
  file system cannot hold (length, NUL, control characters).
- :func:`read_limited` reads at most a given number of bytes (``rrr check /dev/zero`` ends).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Union

from .errors import InvalidValueError

#: longest file or folder name, in UTF-8 bytes (POSIX ``NAME_MAX`` on Linux and macOS)
MAX_NAME_BYTES = 255
#: prefix of the temporary files beside an output (short: a 255-byte name has no room for more)
TEMPORARY = ".rrr-"
#: longest output name, in UTF-8 bytes (below Linux's ``PATH_MAX`` of 4096, leaving room for ``--out``)
MAX_PATH_BYTES = 1024


def write_atomic(path: Union[str, Path], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    The directory is created if needed. Readers see the old file or the complete new one; an
    interruption (``KeyboardInterrupt`` included) leaves no temporary file behind. The file gets
    permissions ``mode``: world-readable (0644) by default, since outputs and checkpoints are
    shared; a rewritten source file keeps its own.
    """
    write_together({Path(path): data}, mode)


def _stage(path: Path, data: bytes, mode: int) -> Path:
    """``data`` in a synced temporary file beside ``path`` (the caller renames or removes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
    except BaseException:
        os.unlink(temporary)
        raise
    return Path(temporary)


def _aside(path: Path) -> Path:
    """A free temporary name beside ``path`` for its previous version."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY, suffix=".old")
    os.close(handle)
    return Path(name)


def write_together(files: Mapping[Path, bytes], mode: int = 0o644) -> None:
    """Write several files (with permissions ``mode``) as one unit: afterwards all are new, or
    (on any exception, Ctrl-C included) all are as they were.

    Two-phase commit: every file is first written to a synced temporary file beside its
    destination; then every existing destination is moved aside, *marker first* (the last
    file of ``files``), so that no old marker ever stands beside a new file; then the new files
    are renamed into place, marker last. An exception during the renames moves everything back.
    A reader that trusts a unit only when its marker exists (``rrr run``'s ``.json``) never
    sees a mixed unit, even after a crash that leaves no chance to undo.
    """
    paths = [Path(p) for p in files]
    staged: dict[Path, Path] = {}
    moved: dict[Path, Path] = {}
    placed: list[Path] = []
    try:
        for path in paths:
            staged[path] = _stage(path, files[path], mode)
        for path in reversed(paths):  # the marker leaves first
            if os.path.lexists(path):
                aside = _aside(path)
                try:
                    os.replace(path, aside)
                except BaseException:
                    os.unlink(aside)
                    raise
                moved[path] = aside
        for path in paths:  # the marker arrives last
            os.replace(staged[path], path)
            del staged[path]
            placed.append(path)
    except BaseException:  # undo, marker first out and last back in
        for path in reversed(placed):
            os.unlink(path)
        for path in reversed(list(moved)):
            os.replace(moved[path], path)
        for temporary in staged.values():
            os.unlink(temporary)
        raise
    for old in moved.values():
        os.unlink(old)


def check_output_name(name: str, suffix: str) -> None:
    """An output name a file system can hold, ending with ``suffix``; :class:`InvalidValueError` if not.

    Refused: an empty name, NUL or other control characters, a backslash, a component longer
    than :data:`MAX_NAME_BYTES` or a name longer than :data:`MAX_PATH_BYTES`, a name that
    ends with a separator or does not end with ``suffix``.
    """
    bad = next((c for c in name if ord(c) < 32 or ord(c) == 127 or c == "\\"), None)
    if bad is not None:
        raise InvalidValueError(f"the output name contains the character {bad!r}", hint="use letters, digits, '-', '_', '.' and '/'")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidValueError(f"the output name is longer than {MAX_PATH_BYTES} bytes")
    for part in name.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise InvalidValueError(f"the file or folder name {part[:20]}... is longer than {MAX_NAME_BYTES} bytes")
    if name.endswith("/") or Path(name).suffix != suffix or Path(name).stem in ("", "."):
        raise InvalidValueError(f'the output "{name}" must be a file name ending with {suffix}', hint=f'as in -> "name{suffix}"')


def output_path(folder: Path, name: str, suffix: str) -> Path:
    """``folder / name``, checked: a valid name (:func:`check_output_name`) that stays inside
    ``folder``: not absolute, no ``..``, no symbolic link among the parts that exist, not an
    existing folder. Raises :class:`InvalidValueError`."""
    check_output_name(name, suffix)
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise InvalidValueError(
            f'the output "{name}" leaves the output folder',
            hint="outputs are written inside --out (the current folder by default): use a relative name without '..'",
        )
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise InvalidValueError(f"the output folder {folder} is a file")
    path = folder / relative
    for part in [*reversed(path.parents[: len(relative.parts) - 1]), path]:
        if os.path.islink(part):
            raise InvalidValueError(f'the output "{name}" goes through the symbolic link {part}', hint="outputs are never written through links")
        if part != path and os.path.lexists(part) and not os.path.isdir(part):
            raise InvalidValueError(f'the output "{name}" needs the folder {part}, which is a file')
    if os.path.isdir(path):
        raise InvalidValueError(f'the output "{name}" is an existing folder')
    existing = next(p for p in path.parents if os.path.lexists(p))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidValueError(f'the output "{name}" cannot be written: the folder {existing} is not writable')
    return path


def read_limited(path: Union[str, Path], limit: int) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them; :class:`InvalidValueError` for a longer
    file (or an endless one: ``/dev/zero``). ``OSError`` when it cannot be read."""
    with open(path, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise InvalidValueError(f"{path} is larger than {limit:,} bytes", hint="a .rrr program is a small text file")
    return data
