"""Annotation sets: images annotated in the prompt tester, add-only and versioned.

A set lives in ``HOME/annotations/<name>/``::

    manifest.json            what the set holds (below), rewritten atomically
    images/0001_<stem>.tif   each image, written once
    labels/0001_<stem>.tif   its instance labels (int32), written once
    v0003/train/images|labels     version 3: hard links to the images then present,
    v0003/held_out/images|labels  so ``--images``/``--labels`` can name a version

The manifest lists every image (file, sha256 of image and labels, time added,
objects, whether every object is annotated, which model round annotated it,
the clicks and seconds per committed object), every version (images, train,
held out) and every retrain run (version, round, held-out metrics). Nothing
is ever removed or changed: image ``n`` (1-based, in the order added) is held
out when ``n`` is a multiple of the set's ``held_out_every``, decided when it
is added, so the held-out share grows with the set and a run's held-out
images stay held out. Torch-free (the GUI reads manifests directly).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .files import atomic_write_json, atomic_write_tiff

SETS = "annotations"
MANIFEST = "manifest.json"
LOCK = ".lock"
FORMAT = "napari-peft-sam/annotation-set"
HELD_OUT_EVERY = 4  # one image in four: about the share a run validates on
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class Item:
    """One annotated image to add: the plane, its labels and the effort it took.

    ``effort`` holds one ``{"clicks": int, "seconds": float}`` per object
    committed with prompts (objects taken from a labels layer have none);
    ``complete`` says every object of the image is annotated (the AIS decoder
    needs that; the point/box objective does not).
    """

    image: np.ndarray
    labels: np.ndarray
    name: str
    complete: bool = False
    effort: list[dict[str, float]] = field(default_factory=list)
    model: str | None = None
    source: str | None = None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def array_hash(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and pixels (equal pixels, equal hash)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.view(np.uint8).reshape(-1))
    return digest.hexdigest()


def sets_root(home: str | os.PathLike) -> Path:
    return Path(home) / SETS


def list_sets(home: str | os.PathLike) -> list[str]:
    """Names of the annotation sets under ``home``."""
    root = sets_root(home)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer at a time (the GUI adds while a retrain records its run)."""
    from .runfolder import _flock

    handle = _flock(folder / LOCK, blocking=True)
    try:
        yield
    finally:
        handle.close()


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # no hard links here (some network or Windows shares)
        shutil.copy2(source, target)


class AnnotationSet:
    """An add-only, versioned set of annotated images (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        home: str | os.PathLike,
        name: str,
        create: bool = True,
        held_out_every: int = HELD_OUT_EVERY,
    ) -> AnnotationSet:
        """The set ``name`` under ``home``; created (empty) if missing and ``create``."""
        if not _NAME.fullmatch(name or ""):
            raise UserError(
                f"An annotation set's name uses letters, digits, '.', '_' and '-' "
                f"(at most 64), got {name!r}."
            )
        folder = sets_root(home) / name
        if (folder / MANIFEST).is_file():
            return cls(folder)
        if not create:
            raise UserError(f"There is no annotation set {name!r} in {folder.parent}.")
        if not isinstance(held_out_every, int) or held_out_every < 2:
            raise UserError(
                f"Hold out every k-th image needs k of 2 or more, got {held_out_every}."
            )
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            if not (folder / MANIFEST).is_file():
                atomic_write_json(
                    folder / MANIFEST,
                    {
                        "format": FORMAT,
                        "name": name,
                        "created": now(),
                        "held_out_every": held_out_every,
                        "images": [],
                        "versions": [],
                        "runs": [],
                    },
                )
        return cls(folder)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as it is on disk now."""
        return json.loads((self.folder / MANIFEST).read_text())

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def version(self) -> int:
        """The newest version (0: nothing added yet)."""
        return len(self.manifest["versions"])

    @property
    def round(self) -> int:
        """Retrains recorded so far: the model generation annotating now."""
        return len(self.manifest["runs"])

    # -- adding ----------------------------------------------------------------------

    def add(self, items: list[Item], round: int | None = None) -> dict[str, Any]:
        """Add annotated images as a new version; returns that version's entry.

        ``round`` is the model generation that annotated them (default: the
        set's current round). An image already in the set (same pixels) is
        refused, and nothing is added.
        """
        if not items:
            raise UserError("Nothing to add: commit objects on an image first.")
        checked = [_checked(item) for item in items]
        with _locked(self.folder):
            manifest = self.manifest
            known = {e["image_sha256"]: e["file"] for e in manifest["images"]}
            round = len(manifest["runs"]) if round is None else round
            entries = []
            for item, labels in checked:
                digest = array_hash(item.image)
                if digest in known:
                    raise UserError(
                        f"{item.name} is already in set {self.name!r} (as "
                        f"{known[digest]}); annotate another image."
                    )
                number = len(manifest["images"]) + len(entries) + 1
                entry = self._write(item, labels, digest, number, manifest)
                entry["round"] = round
                known[digest] = entry["file"]
                entries.append(entry)
            manifest["images"] += entries
            version = self._write_version(manifest)
            manifest["versions"].append(version)
            atomic_write_json(self.folder / MANIFEST, manifest)
        return version

    def _write(
        self, item: Item, labels: np.ndarray, digest: str, number: int, manifest
    ):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(item.name).stem)[:40] or "image"
        file = f"{number:04d}_{stem}.tif"
        atomic_write_tiff(self.folder / "images" / file, item.image)
        atomic_write_tiff(self.folder / "labels" / file, labels)
        return {
            "file": file,
            "name": item.name,
            "source": item.source,
            "image_sha256": digest,
            "labels_sha256": array_hash(labels),
            "shape": list(item.image.shape),
            "dtype": str(item.image.dtype),
            "objects": int(labels.max()),
            "complete": bool(item.complete),
            "held_out": number % manifest["held_out_every"] == 0,
            "added": now(),
            "version": len(manifest["versions"]) + 1,
            "model": item.model,
            "effort": [
                {"clicks": int(e["clicks"]), "seconds": float(e["seconds"])}
                for e in item.effort
            ],
        }

    def _write_version(self, manifest: dict) -> dict[str, Any]:
        """Link every image now in the set into ``vNNNN/train|held_out``."""
        number = len(manifest["versions"]) + 1
        folder = self.folder / f"v{number:04d}"
        if folder.exists():  # left by an add that died before its manifest
            shutil.rmtree(folder)
        for entry in manifest["images"]:
            part = "held_out" if entry["held_out"] else "train"
            for kind in ("images", "labels"):
                _link(
                    self.folder / kind / entry["file"],
                    folder / part / kind / entry["file"],
                )
        held = sum(e["held_out"] for e in manifest["images"])
        return {
            "version": number,
            "created": now(),
            "images": len(manifest["images"]),
            "train": len(manifest["images"]) - held,
            "held_out": held,
            "objects": sum(e["objects"] for e in manifest["images"]),
        }

    # -- reading ---------------------------------------------------------------------

    def folders(self, version: int | None = None) -> dict[str, Path | None]:
        """``--images``/``--labels`` folders of a version (None where empty)."""
        version = version or self.version
        if not 1 <= version <= self.version:
            raise UserError(
                f"Set {self.name!r} has versions 1 to {self.version}, not {version}."
            )
        root = self.folder / f"v{version:04d}"
        return {
            f"{part}_{kind}": (root / part / kind)
            if (root / part / kind).is_dir()
            else None
            for part in ("train", "held_out")
            for kind in ("images", "labels")
        }

    def describe(self, version: int | None = None) -> str:
        return f"annotation set '{self.name}' v{version or self.version:04d}"

    def datasets(self, version: int | None = None):
        """The training images of a version and its held-out images (or None)."""
        from .sources import from_files

        version = version or self.version
        paths = self.folders(version)
        if paths["train_images"] is None:
            raise UserError(
                f"Set {self.name!r} v{version:04d} has no training image yet: every "
                f"{self.manifest['held_out_every']}th image is held out; add another."
            )
        train = from_files(paths["train_images"], paths["train_labels"])
        train.source = self.describe(version)
        held = None
        if paths["held_out_images"] is not None:
            held = from_files(paths["held_out_images"], paths["held_out_labels"])
            held.source = f"{self.describe(version)} (held-out)"
        return train, held

    def summary(self) -> dict[str, Any]:
        """Counts for the GUI: images, held out, objects, version, round."""
        manifest = self.manifest
        images = manifest["images"]
        return {
            "name": self.name,
            "version": len(manifest["versions"]),
            "round": len(manifest["runs"]),
            "images": len(images),
            "held_out": sum(e["held_out"] for e in images),
            "objects": sum(e["objects"] for e in images),
            "partial": sum(not e["complete"] for e in images),
            "held_out_every": manifest["held_out_every"],
            "last_run": manifest["runs"][-1]["run_dir"] if manifest["runs"] else None,
        }

    def effort(self, round: int | None = None) -> list[dict[str, Any]]:
        """Effort per round (or of one round): clicks and seconds per object."""
        manifest = self.manifest
        rounds = sorted({e["round"] for e in manifest["images"]})
        out = []
        for r in rounds if round is None else [round]:
            objects = [
                o for e in manifest["images"] if e["round"] == r for o in e["effort"]
            ]
            images = sum(e["round"] == r for e in manifest["images"])
            out.append(effort_summary(r, objects, images))
        return out

    def record_run(self, entry: dict[str, Any]) -> None:
        """Add a finished retrain (run folder, version, round, metrics)."""
        with _locked(self.folder):
            manifest = self.manifest
            manifest["runs"].append(entry | {"recorded": now()})
            atomic_write_json(self.folder / MANIFEST, manifest)


def effort_summary(round: int, objects: list[dict], images: int) -> dict[str, Any]:
    """Mean clicks and seconds per object of one round's committed objects."""
    clicks = [o["clicks"] for o in objects]
    seconds = [o["seconds"] for o in objects if o.get("seconds") is not None]
    return {
        "round": round,
        "images": images,
        "objects": len(objects),
        "clicks_per_object": float(np.mean(clicks)) if clicks else None,
        "seconds_per_object": float(np.mean(seconds)) if seconds else None,
    }


def _checked(item: Item) -> tuple[Item, np.ndarray]:
    """The item's labels as consecutive int32 ids, after the checks of training data."""
    from .data import MIN_SIDE, check_labels, relabel_consecutive

    labels = check_labels(item.labels, f"labels of {item.name}")
    image = np.asarray(item.image)
    if labels.ndim != 2 or image.shape[:2] != labels.shape:
        raise UserError(
            f"{item.name}: image {image.shape} and labels {labels.shape} must be one "
            "2D plane of the same size."
        )
    if min(labels.shape) < MIN_SIDE:
        raise UserError(f"{item.name} is smaller than {MIN_SIDE} x {MIN_SIDE} pixels.")
    labels = relabel_consecutive(labels)
    if not labels.any():
        raise UserError(
            f"{item.name} has no annotated object; commit at least one object first."
        )
    return item, labels


def curve(aset: AnnotationSet, metric: str | None = None) -> list[dict[str, Any]]:
    """Per round: clicks and seconds per object, and the held-out ``metric``
    (default: single box, the catalog's primary metric) of the round's model
    (the retrain that made it; none for the base model)."""
    from .catalog import PRIMARY

    metric = metric or PRIMARY
    by_round = {e["round"]: dict(e, msa=None) for e in aset.effort()}
    for run in aset.manifest["runs"]:
        entry = by_round.setdefault(
            run["round"], effort_summary(run["round"], [], 0) | {"msa": None}
        )
        entry["msa"] = (run.get("metrics") or {}).get(metric)
    return [by_round[r] for r in sorted(by_round)]
