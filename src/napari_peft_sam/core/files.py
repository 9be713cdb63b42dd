"""Atomic file writes (temporary file, fsync, rename): readers see old or new, never half.

Torch-free, so the napari process can use it too.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back
    os.umask(mask)
    return mask


# The process's umask, read once (at import, before threads start): files get
# the permissions any new file would (a run folder can be shared by a group),
# not mkstemp's private 0600.
UMASK = _umask()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(file)`` so readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_tiff(path: str | os.PathLike, array: np.ndarray) -> Path:
    import tifffile

    buffer = io.BytesIO()  # tifffile needs a named or seekable file
    tifffile.imwrite(buffer, np.asarray(array), compression="zlib")
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))
