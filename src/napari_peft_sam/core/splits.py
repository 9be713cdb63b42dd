"""The one place that says which images a run trains, validates and is tested on.

Own data and sample data are split by a seeded draw (``DataSpec.val_fraction``,
``DataSpec.split_seed``): the held-out part validates during training and is
what a finished run is evaluated on. A benchmark dataset brings its own
train, val and test splits (``core.benchmarks``); a run is evaluated on its
test split.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    from .config import RunConfig
    from .data import Dataset


def load(config: RunConfig) -> Dataset:
    """Every image of a run's own data (files or sample data), unsplit."""
    from .sources import load_dataset

    spec = config.data
    return load_dataset(
        spec.dataset,
        spec.images,
        spec.labels,
        spec.image_key,
        spec.label_key,
        spec.stack,
    )


def is_benchmark(config: RunConfig) -> bool:
    from .benchmarks import BENCHMARKS

    return config.data.dataset in BENCHMARKS


def train_val(
    config: RunConfig, dataset: Dataset | None = None
) -> tuple[Dataset, Dataset]:
    """The training and validation sets of a run (``dataset``: already loaded)."""
    spec = config.data
    if dataset is None and is_benchmark(config):
        from .benchmarks import benchmark_dataset

        return (
            benchmark_dataset(spec.dataset, "train"),
            benchmark_dataset(spec.dataset, "val"),
        )
    dataset = dataset if dataset is not None else load(config)
    train, val = dataset.split(spec.val_fraction, spec.split_seed)
    for part, name in ((train, "training"), (val, "validation")):
        if not part.n_objects:
            raise UserError(
                f"The {name} part of the split ({len(part)} of {len(dataset)} "
                "images) holds no labelled objects; change the validation fraction "
                "(--val-fraction) or the split seed (--split-seed), or label objects "
                "in more images."
            )
    return train, val


def held_out(
    config: RunConfig, dataset: Dataset | None = None, benchmark_split: str = "test"
) -> Dataset:
    """What a finished run is evaluated on: a benchmark's test split, else the
    held-out part of the seeded split; for a run on an annotation set's version
    (a retrain), that version's held-out images."""
    if dataset is None and config.data.annotation:
        return _annotation_held_out(config)
    if dataset is None and is_benchmark(config):
        from .benchmarks import benchmark_dataset

        return benchmark_dataset(config.data.dataset, benchmark_split)
    from .data import Dataset

    part = train_val(config, dataset)[1]
    return Dataset(list(part), f"{part.source} (held-out)")


def _annotation_held_out(config: RunConfig) -> Dataset:
    """``vNNNN/held_out`` beside the ``vNNNN/train`` a retrain trained on
    (``core.annotations``: the set decides which images are held out)."""
    from pathlib import Path

    from .errors import UserError
    from .sources import from_files

    version = Path(config.data.images[0]).parent.parent
    images, labels = version / "held_out" / "images", version / "held_out" / "labels"
    if not images.is_dir():
        raise UserError(
            f"{config.data.annotation} holds no held-out image yet; add annotated "
            "images to the set, or pass test images."
        )
    dataset = from_files(images, labels)
    dataset.source = f"{config.data.annotation} (held-out)"
    return dataset


def fingerprint(dataset: Dataset) -> str:
    """A hash of a dataset's pixels and labels: is this the run's own data?"""
    digest = hashlib.blake2b(digest_size=16)
    for sample in dataset:
        for array in (sample.image, sample.labels):
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def image_hashes(dataset: Dataset) -> list[str]:
    """One short hash per image (pixels and labels): which images trained a run."""
    out = []
    for sample in dataset:
        digest = hashlib.blake2b(digest_size=8)
        for array in (sample.image, sample.labels):
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
        out.append(digest.hexdigest())
    return out
