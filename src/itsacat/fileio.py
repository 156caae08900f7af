"""Atomic file writes: a temporary file in the same folder, fsync, then a rename.

A run interrupted at any moment leaves either the old file or the new one, never half of one.
The new file gets the permissions `open()` would give it (0666 less the umask, usually
0644), not the owner-only 0600 of a temporary file.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from itsacat.errors import ItsacatError

_UMASK = os.umask(0o022)  # read it (only os.umask can) and put it straight back
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
# What numpy and zipfile raise for a .npz they cannot read: a folder, an empty, truncated,
# text or bit-flipped file (fuzzed byte by byte); to a user they all mean "damaged".
NPZ_ERRORS = (OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def writable_folder(path: Path) -> None:
    """Refuse, before any work, an output folder that cannot be written: `path` is a file,
    or it (or the nearest folder above it that exists) is not writable."""
    if path.exists() and not path.is_dir():
        raise ItsacatError(
            f"{path} is a file, but it must be a folder for the outputs; move it away"
        )
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ItsacatError(
            f"cannot write {path}: {existing} is not writable; fix its permissions or run "
            "from a folder you own"
        )
