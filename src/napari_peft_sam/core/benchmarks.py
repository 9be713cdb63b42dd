"""The PEFT-SAM study's benchmark datasets, fetched with torch_em into a cache.

Splits follow the study (``peft_sam/dataset/get_data_loaders.py`` in
computational-cell-analytics/peft-sam):

- orgasegment: the dataset's own train / val / eval (= test) folders;
- livecell: the dataset's train / val / test splits;
- covid_if: samples 0-9 train, 10-12 val, 13 onwards test;
- platy_cilia: volumes 1 and 2, slices 0-84 train and 85 onwards val; volume 3 test;
- mitolab_glycolytic_muscle (CEM MitoLab benchmark 3): slices 0-174 train,
  175-224 val, the rest test. Its source needs aspera, so the study placed
  it by hand too: put the files in the cache folder.

The data go to ``$NAPARI_PEFT_SAM_DATA_DIR/<name>`` (default
``~/.cache/napari-peft-sam/datasets/<name>``). Every image passes through the
same normalisation as the user's own data (``core.data``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Dataset, from_arrays, read_image
from .errors import UserError

DATA_ENV = "NAPARI_PEFT_SAM_DATA_DIR"
SPLITS = ("train", "val", "test")

Arrays = list[tuple[np.ndarray, np.ndarray, str]]


def data_cache_dir() -> Path:
    default = Path.home() / ".cache" / "napari-peft-sam" / "datasets"
    return Path(os.environ.get(DATA_ENV) or default).expanduser()


def _h5(path: str, key: str) -> np.ndarray:
    return read_image(path, key)


def _orgasegment(root: Path, split: str) -> Arrays:
    from torch_em.data.datasets.light_microscopy.orgasegment import (
        get_orgasegment_paths,
    )

    images, labels = get_orgasegment_paths(
        root, split={"test": "eval"}.get(split, split), download=True
    )
    return [
        (read_image(i), read_image(lab), Path(i).name)
        for i, lab in zip(images, labels, strict=True)
    ]


def _livecell(root: Path, split: str) -> Arrays:
    from torch_em.data.datasets.light_microscopy.livecell import get_livecell_paths

    images, labels = get_livecell_paths(root, split, download=True)
    return [
        (read_image(i), read_image(lab), Path(i).name)
        for i, lab in zip(images, labels, strict=True)
    ]


def _covid_if(root: Path, split: str) -> Arrays:
    from torch_em.data.datasets.light_microscopy.covid_if import get_covid_if_paths

    paths = get_covid_if_paths(root, download=True)
    ranges = {"train": (0, 10), "val": (10, 13), "test": (13, len(paths))}
    start, stop = ranges[split]
    return [
        (_h5(p, "raw/serum_IgG/s0"), _h5(p, "labels/cells/s0"), Path(p).name)
        for p in paths[start:stop]
    ]


def _planes_of(
    volume: np.ndarray, labels: np.ndarray, rows: slice, name: str
) -> Arrays:
    indices = range(*rows.indices(len(volume)))
    return [(volume[z], labels[z], f"{name}[{z}]") for z in indices]


def _platy_cilia(root: Path, split: str) -> Arrays:
    from torch_em.data.datasets.electron_microscopy.platynereis import (
        get_platynereis_paths,
    )

    plan = {
        "train": {1: slice(0, 85), 2: slice(0, 85)},
        "val": {1: slice(85, None), 2: slice(85, None)},
        "test": {3: slice(None)},
    }[split]
    paths = get_platynereis_paths(
        root, sample_ids=list(plan), name="cilia", download=True
    )
    out: Arrays = []
    for path, rows in zip(paths, plan.values(), strict=True):
        volume = _h5(path, "volumes/raw")
        labels = _h5(path, "volumes/labels/segmentation")
        out += _planes_of(volume, labels, rows, Path(path).name)
    return out


def _mitolab(root: Path, split: str) -> Arrays:
    from torch_em.data.datasets.electron_microscopy.cem import get_benchmark_paths

    raw, labels, _, _, _ = get_benchmark_paths(root, dataset_id=3, download=False)
    rows = {"train": slice(0, 175), "val": slice(175, 225), "test": slice(225, None)}[
        split
    ]
    return _planes_of(read_image(raw), read_image(labels), rows, Path(raw).name)


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    fetch: Callable[[Path, str], Arrays]


BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark("orgasegment", "OrgaSegment (organoids, bright field)", _orgasegment),
        Benchmark("livecell", "LIVECell (cells, phase contrast)", _livecell),
        Benchmark("covid_if", "Covid-IF (cells, immunofluorescence)", _covid_if),
        Benchmark(
            "mitolab_glycolytic_muscle",
            "MitoLab glycolytic muscle (mitochondria, EM)",
            _mitolab,
        ),
        Benchmark("platy_cilia", "Platynereis cilia (EM)", _platy_cilia),
    )
}


def benchmark_dataset(name: str, split: str = "train") -> Dataset:
    """Download (once) and load a split of benchmark dataset ``name``."""
    if name not in BENCHMARKS:
        known = ", ".join([*BENCHMARKS, "nuclei", "organoids"])
        raise UserError(f"Unknown dataset {name!r}; choose one of {known}.")
    if split not in SPLITS:
        raise UserError(f"Unknown split {split!r}; choose train, val or test.")
    root = data_cache_dir() / name
    existed = root.exists() and any(root.iterdir())
    try:
        arrays = BENCHMARKS[name].fetch(root, split)
    except UserError:
        raise
    except Exception as error:
        if not existed:  # torch_em treats a half-made folder as downloaded
            shutil.rmtree(root, ignore_errors=True)
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise UserError(
            f"Dataset {name!r} is not in the cache folder {root} and could not be "
            f"fetched ({reason}); download it where you have internet and place its "
            "files there."
        ) from None
    images = [(image, labels) for image, labels, _ in arrays]
    dataset = from_arrays(images, [n for *_, n in arrays], source=f"{name} ({split})")
    return dataset
