"""Atomic file writes (temporary file, fsync, rename): readers see old or new, never half.

Torch-free, so the napari process can use it too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def staged(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Temporary files beside ``paths`` to write; renamed onto them together.

    Every output is written (and fsynced) before the first is renamed, so a
    failure (a full disk, an error while writing) leaves every target as it was
    and removes the temporary files.
    """
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
            )
            temps.append(Path(tmp))
            os.fchmod(fd, 0o666 & ~UMASK)
            os.close(fd)
        yield temps
        for tmp in temps:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        for tmp, target in zip(temps, targets, strict=True):
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def writing(
    target: str | os.PathLike, hint: str = "choose another place"
) -> Iterator[None]:
    """Turn a failed write (read-only folder, full disk) into one sentence."""
    from .errors import UserError

    try:
        yield
    except OSError as error:
        raise UserError(
            f"Cannot write {target} ({error.strerror or error}); free disk space, "
            f"fix the folder's permissions or {hint}."
        ) from None


def refuse_target(path: Path, overwrite: bool, what: str = "--out") -> None:
    """Refuse writing ``path`` where it is a folder, or exists without ``overwrite``."""
    from .errors import UserError

    if path.is_dir():
        raise UserError(f"{path} is a folder; give {what} a file name.")
    if path.exists() and not overwrite:
        raise UserError(
            f"{path} already exists; choose another {what} or pass --overwrite to "
            "replace it."
        )
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(
            f"{path.parent} is a file, not a folder; choose another {what}."
        )
