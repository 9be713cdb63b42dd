"""Where datasets come from: files and folders, the shipped sample data,
benchmark datasets and GUI requests. Each becomes a :class:`~.data.Dataset`
through the same checks and normalisation (``core.data``).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from .benchmarks import benchmark_dataset
from .data import Dataset, from_arrays, read_image
from .errors import UserError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".zarr", ".h5", ".hdf5")
SAMPLE_DOMAINS = ("nuclei", "organoids")
# name parts that distinguish an image from its labels: "x_img.tif" <-> "x_masks.png"
_ROLE_WORDS = r"(img|image|raw|im|label|labels|mask|masks|seg|gt|instances)"


def expand_paths(pattern: str | os.PathLike | Sequence) -> list[Path]:
    """Files of a folder, a glob pattern, a single file, or a list of these."""
    if isinstance(pattern, (list, tuple)):
        return [p for item in pattern for p in expand_paths(item)]
    text = str(pattern)
    path = Path(text)
    if path.is_dir() and path.suffix.lower() != ".zarr":
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise UserError(
                f"Folder {path} contains no images ({', '.join(IMAGE_SUFFIXES)})."
            )
        return found
    if any(ch in text for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(text))
        if not found:
            raise UserError(f"The pattern {text} matches no files.")
        return found
    if not path.exists():
        raise UserError(f"{path} does not exist.")
    return [path]


def _match_key(path: Path) -> str:
    stem = path.name.split(".")[0].lower()
    return re.sub(rf"([_\-. ]?{_ROLE_WORDS})+$", "", stem) or stem


def pair_paths(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path]]:
    """Match images to labels by file name (ignoring words like _img / _masks)."""
    if len(images) != len(labels):
        raise UserError(
            f"Found {len(images)} images but {len(labels)} label files; they must pair up."
        )
    by_key = {_match_key(p): p for p in labels}
    if len(by_key) == len(labels) and all(_match_key(p) in by_key for p in images):
        return [(p, by_key[_match_key(p)]) for p in images]
    if [p.name for p in images] == [p.name for p in labels] or len(images) == 1:
        return list(zip(images, labels, strict=True))
    missing = next(p for p in images if _match_key(p) not in by_key)
    raise UserError(f"No label file matches image {missing.name}; name them alike.")


def from_files(
    images: str | os.PathLike | Sequence,
    labels: str | os.PathLike | Sequence,
    image_key: str | None = None,
    label_key: str | None = None,
    stack: bool = False,
) -> Dataset:
    """A dataset from folders, glob patterns or files of images and labels."""
    pairs = pair_paths(expand_paths(images), expand_paths(labels))
    arrays = [
        (read_image(i, image_key), read_image(lab, label_key)) for i, lab in pairs
    ]
    names = [i.name for i, _ in pairs]
    return from_arrays(arrays, names, stack=stack, source=f"files {images}")


def sample_data_root() -> Path:
    return Path(str(resources.files("napari_peft_sam") / "sample_data"))


def sample_dataset(domain: str) -> Dataset:
    """The shipped sample data of ``domain`` (nuclei or organoids)."""
    if domain not in SAMPLE_DOMAINS:
        raise UserError(
            f"Unknown sample data {domain!r}; choose {' or '.join(SAMPLE_DOMAINS)}."
        )
    root = sample_data_root() / domain
    dataset = from_files(root / "images", root / "labels")
    dataset.source = f"sample data '{domain}'"
    return dataset


def load_dataset(
    dataset: str | None = None,
    images=None,
    labels=None,
    image_key: str | None = None,
    label_key: str | None = None,
    stack: bool = False,
    split: str = "train",
) -> Dataset:
    """The dataset a CLI or GUI request names: sample data, benchmark, or files."""
    if dataset is not None:
        if dataset in SAMPLE_DOMAINS:
            return sample_dataset(dataset)
        return benchmark_dataset(dataset, split)
    if images is None or labels is None:
        raise UserError("Name a dataset, or give both images and labels.")
    return from_files(images, labels, image_key, label_key, stack)


def from_request(source: dict) -> Dataset:
    """The dataset a GUI request names: layers' arrays, files, or a name.

    ``source["kind"]`` is ``arrays`` (``images``, ``labels``, ``names``,
    ``stack``, ``source``), ``files`` (``images``, ``labels``, ``stack``) or
    ``named`` (``name``: sample data or a benchmark).
    """
    kind = source["kind"]
    if kind == "arrays":
        return from_arrays(
            list(zip(source["images"], source["labels"], strict=True)),
            source.get("names"),
            source.get("stack", False),
            source.get("source", "napari layers"),
        )
    if kind == "files":
        return load_dataset(
            images=source["images"], labels=source["labels"], stack=source.get("stack")
        )
    return load_dataset(source["name"])


def write_pairs(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    folder: str | os.PathLike,
) -> tuple[list[str], list[str]]:
    """Save (image, labels) pairs as ``folder/images|labels/layer_NN.tif``.

    What the GUI trains on becomes files that ``--images``/``--labels`` (and a
    run card) can name, so a run from napari layers can be reproduced.
    """
    from .files import atomic_write_tiff

    out: dict[str, list[str]] = {"images": [], "labels": []}
    for k, pair in enumerate(zip(images, labels, strict=True)):
        for kind, array in zip(out, pair, strict=True):
            path = Path(folder) / kind / f"layer_{k:02d}.tif"
            out[kind].append(str(atomic_write_tiff(path, array)))
    return out["images"], out["labels"]
