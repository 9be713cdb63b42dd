"""Annotation sets: images annotated in the prompt tester, add-only and versioned.

A set lives in ``HOME/annotations/<name>/``::

    manifest.json            what the set holds (below), rewritten atomically
    images/0001_<stem>.tif   each image, written once
    labels/0001_<stem>.tif   its instance labels (int32), written once
    v0003/train/images|labels     version 3: copies of the images then present,
    v0003/held_out/images|labels  written when first asked for (a retrain, or
                                  ``folders``) so ``--images``/``--labels`` can name it

The manifest lists every image (file, sha256 of image and labels, time added,
objects, whether every object is annotated, which model round annotated it,
the clicks and seconds per committed object), every version (images, train,
held out) and every retrain run (version, round, held-out metrics). Nothing
is ever removed or changed: image ``n`` (1-based, in the order added) is held
out when ``n`` is a multiple of the set's ``held_out_every``, decided when it
is added, so the held-out share grows with the set and a run's held-out
images stay held out. Before a version is trained on or written, every image
and label file is checked against the manifest's hashes: an edited or deleted
original is refused in one sentence, never trained on. Torch-free (the GUI
reads manifests directly).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .files import atomic_write_json, atomic_write_tiff
from .setfiles import (
    _check_manifest,
    _damaged,
    array_hash,
    exact_hash,
    missing,
    now,
    verified,
    version_entry,
    write_version,
)

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


def sets_root(home: str | os.PathLike) -> Path:
    return Path(home) / SETS


def list_sets(home: str | os.PathLike) -> list[str]:
    """Names of the annotation sets under ``home``."""
    root = sets_root(home)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())


def _orphans(folder: Path) -> bool:
    """Whether ``folder`` holds a set's images or labels but no manifest."""
    return any(any((folder / part).glob("*")) for part in ("images", "labels"))


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer at a time (the GUI adds while a retrain records its run)."""
    from .runfolder import _flock

    handle = _flock(folder / LOCK, blocking=True)
    try:
        yield
    finally:
        handle.close()


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
            cls(folder).manifest  # noqa: B018  (a damaged set: one sentence now)
            return cls(folder)
        if _orphans(folder):  # a new manifest would number over these files
            raise _damaged(folder / MANIFEST, "missing, with images beside it")
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

    @classmethod
    def find(cls, home: str | os.PathLike, name: str) -> AnnotationSet | None:
        """The set ``name``; None if there is none yet; a damaged set raises."""
        folder = sets_root(home) / str(name)
        if not _NAME.fullmatch(name or "") or not (
            (folder / MANIFEST).is_file() or _orphans(folder)
        ):
            return None
        return cls.open(home, name, create=False)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as it is on disk now (checked: one sentence if damaged)."""
        path = self.folder / MANIFEST
        try:
            return _check_manifest(json.loads(path.read_text()), path)
        except (OSError, ValueError) as error:
            if isinstance(error, UserError):
                raise
            raise _damaged(path, type(error).__name__) from None

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
            missing(self.folder, manifest["images"])
            known = {e["image_sha256"]: e["file"] for e in manifest["images"]}
            round = len(manifest["runs"]) if round is None else round
            entries = []
            for item, labels in checked:
                digest = array_hash(item.image)
                seen = known.get(digest) or known.get(exact_hash(item.image))
                if seen:
                    raise UserError(
                        f"{item.name} is already in set {self.name!r} (as "
                        f"{seen}); annotate another image."
                    )
                number = len(manifest["images"]) + len(entries) + 1
                entry = self._write(item, labels, digest, number, manifest)
                entry["round"] = round
                known[digest] = entry["file"]
                entries.append(entry)
            manifest["images"] += entries
            version = version_entry(manifest)
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

    def version_entries(self, version: int) -> list[dict[str, Any]]:
        """The manifest's entries of the images version ``version`` holds."""
        return [e for e in self.manifest["images"] if e["version"] <= version]

    # -- reading ---------------------------------------------------------------------

    def folders(self, version: int | None = None) -> dict[str, Path | None]:
        """``--images``/``--labels`` folders of a version (None where empty),
        written (copies of the checked originals) the first time they are asked for."""
        version = version or self.version
        if not 1 <= version <= self.version:
            raise UserError(
                f"Set {self.name!r} has versions 1 to {self.version}, not {version}."
            )
        root = self.folder / f"v{version:04d}"
        with _locked(self.folder):
            write_version(self.folder, root, self.version_entries(version))
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
        """The training images of a version and its held-out images (or None),
        read from the originals after checking them against the manifest."""
        from .data import from_arrays

        version = version or self.version
        entries = self.version_entries(version)
        pairs = verified(self.folder, entries)
        parts = {}
        for held in (False, True):
            chosen = [
                (p, e["file"])
                for p, e in zip(pairs, entries, strict=True)
                if e["held_out"] == held
            ]
            if chosen:
                arrays, names = zip(*chosen, strict=True)
                parts[held] = from_arrays(list(arrays), list(names))
        if False not in parts:
            raise UserError(
                f"Set {self.name!r} v{version:04d} has no training image yet: every "
                f"{self.manifest['held_out_every']}th image is held out; add another."
            )
        parts[False].source = self.describe(version)
        if True in parts:
            parts[True].source = f"{self.describe(version)} (held-out)"
        return parts[False], parts.get(True)

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
    from .data import MIN_SIDE, check_labels, from_arrays, relabel_consecutive

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
    from_arrays([(image, labels)], [item.name])  # every check training makes
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
