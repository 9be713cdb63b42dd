"""The files of an annotation set: hashes, the manifest's checks, and version
folders written as copies of originals checked against the manifest.

Torch-free (the GUI reads manifests directly).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .files import UMASK

KINDS = ("images", "labels")


def array_hash(array: np.ndarray) -> str:
    """sha256 of an array's shape and pixel values, whatever its dtype (the same
    image as uint16 and as float32 has one hash)."""
    values = np.ascontiguousarray(np.asarray(array, np.float64) + 0.0)  # -0.0 -> 0.0
    digest = hashlib.sha256(f"{values.shape}".encode())
    digest.update(values.view(np.uint8).reshape(-1))
    return digest.hexdigest()


def exact_hash(array: np.ndarray) -> str:
    """sha256 of dtype, shape and bytes: the hash of sets written before
    ``array_hash`` ignored the dtype."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.view(np.uint8).reshape(-1))
    return digest.hexdigest()


def _damaged(path: Path, why: str) -> UserError:
    return UserError(
        f"The annotation set's manifest {path} is damaged ({why}); restore it from "
        "a backup or start a new set."
    )


def _check_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    if not isinstance(manifest, dict):
        raise _damaged(path, "not a mapping")
    for key in ("images", "versions", "runs"):
        if not isinstance(manifest.get(key), list):
            raise _damaged(path, f"no list of {key}")
    every = manifest.get("held_out_every")
    if not isinstance(every, int) or isinstance(every, bool) or every < 2:
        raise _damaged(path, f"held_out_every is {every!r}, not 2 or more")
    keys = ("file", "image_sha256", "labels_sha256", "held_out", "version")
    if not all(isinstance(e, dict) and set(keys) <= set(e) for e in manifest["images"]):
        raise _damaged(path, "an image entry lacks its file, hashes or version")
    return manifest


def missing(folder: Path, entries: list[dict[str, Any]]) -> None:
    """Refuse a set whose original image or label files are gone."""
    for entry in entries:
        for kind in KINDS:
            if not (folder / kind / entry["file"]).is_file():
                raise UserError(
                    f"{folder / kind / entry['file']} of annotation set "
                    f"{folder.name!r} is missing; put it back (the manifest lists it)."
                )


def _read(path: Path) -> np.ndarray:
    import tifffile

    try:
        return tifffile.imread(path)
    except Exception as error:
        raise UserError(
            f"{path} of an annotation set cannot be read ({type(error).__name__}); "
            "put the original back."
        ) from None


def _same(array: np.ndarray, digest: str) -> bool:
    return digest in (array_hash(array), exact_hash(array))


def verified(
    folder: Path, entries: list[dict[str, Any]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (image, labels) of ``entries``, each checked against its manifest hash."""
    missing(folder, entries)
    out = []
    for entry in entries:
        pair = []
        for kind, key in zip(KINDS, ("image_sha256", "labels_sha256"), strict=True):
            path = folder / kind / entry["file"]
            array = _read(path)
            if not _same(array, entry[key]):
                raise UserError(
                    f"{path} was changed after it was added to annotation set "
                    f"{folder.name!r} (it no longer matches the manifest's hash); put "
                    "the original back, or add the edited image to a new set."
                )
            pair.append(array)
        out.append((pair[0], pair[1]))
    return out


def write_version(folder: Path, root: Path, entries: list[dict[str, Any]]) -> None:
    """Write version folder ``root`` (copies of the checked originals), staged
    and renamed into place; an existing one is checked instead, and files it
    shares with the originals (hard links of older sets) become copies."""
    if root.is_dir():
        return _check_version(folder, root, entries)
    verified(folder, entries)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=folder))
    try:
        for entry in entries:
            part = "held_out" if entry["held_out"] else "train"
            for kind in KINDS:
                target = staging / part / kind / entry["file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / kind / entry["file"], target)
                target.chmod(0o666 & ~UMASK)
        staging.chmod(0o777 & ~UMASK)
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_version(folder: Path, root: Path, entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        part = "held_out" if entry["held_out"] else "train"
        for kind, key in zip(KINDS, ("image_sha256", "labels_sha256"), strict=True):
            path, original = (
                root / part / kind / entry["file"],
                folder / kind / entry["file"],
            )
            if not path.is_file() or not _same(_read(path), entry[key]):
                raise UserError(
                    f"{path} was changed or removed after version {root.name} was "
                    f"written; put it back, or copy {root.name} elsewhere to edit it."
                )
            if original.is_file() and path.samefile(original):  # an old hard link
                copy = path.with_name(f".{path.name}.copy")
                shutil.copyfile(original, copy)
                copy.replace(path)


def now() -> str:
    """The local time stamp a manifest records."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def version_entry(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's entry of a new version holding every image now in the set."""
    held = sum(e["held_out"] for e in manifest["images"])
    return {
        "version": len(manifest["versions"]) + 1,
        "created": now(),
        "images": len(manifest["images"]),
        "train": len(manifest["images"]) - held,
        "held_out": held,
        "objects": sum(e["objects"] for e in manifest["images"]),
    }
