"""Datasets for training, evaluation and sweeps: one abstraction, one normalisation.

A :class:`Dataset` is a list of :class:`Sample` (one 2D image, normalised to
float32 ``(H, W, 3)`` in 0..255 as SAM expects, plus its instance labels). It is
built from in-memory arrays (napari layers), folders or glob patterns, the
shipped sample data, or a benchmark dataset (``core.benchmarks``). Every input
check raises :class:`~napari_peft_sam.core.errors.UserError` with one sentence
saying what to change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

MIN_SIDE = 16  # pixels: one token of SAM's 16-pixel patch embedding


@dataclass(frozen=True)
class Sample:
    """One 2D image (float32, (H, W, 3), 0..255) and its instance labels (int32)."""

    image: np.ndarray
    labels: np.ndarray
    name: str

    @property
    def n_objects(self) -> int:
        return int(np.count_nonzero(np.unique(self.labels)))


class Dataset(Sequence[Sample]):
    """An ordered collection of samples plus where they came from."""

    def __init__(self, samples: Sequence[Sample], source: str) -> None:
        self.samples = list(samples)
        self.source = source

    def __getitem__(self, i):
        return self.samples[i]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def n_objects(self) -> int:
        return sum(s.n_objects for s in self.samples)

    def describe(self) -> str:
        return f"{len(self)} images, {self.n_objects} objects ({self.source})"

    def summary(self, val_fraction: float = 0.2, seed: int = 0) -> dict:
        """Counts a user sees before training: images, objects and the split."""
        train, val = self.split(val_fraction, seed)
        return {
            "images": len(self),
            "objects": self.n_objects,
            "train": len(train),
            "val": len(val),
            "describe": self.describe(),
        }

    def split(
        self, val_fraction: float = 0.2, seed: int = 0
    ) -> tuple[Dataset, Dataset]:
        """Deterministic train/validation split.

        With two or more images the validation part holds at least one image
        (and the training part too); a single image is split into a training
        and a validation tile.
        """
        if not 0 < val_fraction < 1:
            raise UserError(
                f"The validation fraction must be between 0 and 1, got {val_fraction}."
            )
        if len(self) == 1:
            train, val = split_tiles(self.samples[0], val_fraction)
            return Dataset([train], self.source), Dataset([val], self.source)
        order = np.random.default_rng(seed).permutation(len(self))
        n_val = min(len(self) - 1, max(1, round(val_fraction * len(self))))
        val = sorted(order[:n_val])
        train = sorted(order[n_val:])
        return (
            Dataset([self.samples[i] for i in train], self.source),
            Dataset([self.samples[i] for i in val], self.source),
        )


# -- normalisation --------------------------------------------------------


def normalize_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """The one normalisation for training, evaluation and prompting.

    Returns float32 ``(H, W, 3)`` in 0..255. uint8 images are kept as they
    are (SAM's pretraining range); any other dtype (16-bit, float, signed) is
    scaled per image between its 0.1 and 99.9 percentiles, so 16-bit and float
    data work without conversion. Grayscale is repeated to three channels,
    two channels get an empty third, RGBA loses its alpha.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise UserError(
            f"{name} must be 2D (grayscale) or 2D with channels, got shape {image.shape}."
        )
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if not np.issubdtype(image.dtype, np.number):
        raise UserError(f"{name} has non-numeric pixels ({image.dtype}).")
    if np.issubdtype(image.dtype, np.complexfloating):
        raise UserError(
            f"{name} has complex-valued pixels ({image.dtype}); pass real intensities "
            "(e.g. the magnitude, numpy.abs) instead."
        )
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise UserError(
            f"{name} contains NaN or infinite values; fill or mask them first."
        )
    channels = image.shape[-1]
    if channels == 4:
        image = image[..., :3]
    elif channels > 4:
        raise UserError(
            f"{name} has {channels} channels; choose one or three of them (SAM takes "
            "grayscale or RGB)."
        )
    if image.dtype == np.uint8:
        out = image.astype(np.float32)
    else:
        out = image.astype(np.float32)
        low, high = np.percentile(out, (0.1, 99.9))
        scale = 255.0 / (high - low) if high > low else 0.0
        out = np.clip((out - low) * scale, 0, 255)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    elif out.shape[-1] == 2:
        out = np.concatenate([out, np.zeros_like(out[..., :1])], axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Instance labels as int32; non-integer or negative values are refused."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        from scipy import ndimage as ndi

        return ndi.label(labels)[0].astype(np.int32)
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or not np.all(labels == np.round(labels)):
            raise UserError(
                f"{name} are not integers (instance ids): pass a Labels layer or an "
                "integer label image, not a probability map."
            )
    elif not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{name} must be integer instance ids, got {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise UserError(f"{name} contain negative ids; instance ids must be >= 0.")
    if labels.size and labels.max() > np.iinfo(np.int32).max:
        raise UserError(f"{name} contain ids beyond 2**31; relabel them consecutively.")
    return labels.astype(np.int32)


# -- building datasets -------------------------------------------------------


def _planes(
    image, labels, name: str, stack: bool
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Split image/labels into matching 2D planes, validating their shapes."""
    image, labels = np.asarray(image), np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] in (3, 4) and min(labels.shape[:2]) > 4:
        raise UserError(
            f"The labels of {name} are an RGB (colour) image {labels.shape}; labels "
            "must be one integer instance id per pixel: save them as a single-channel "
            "integer label image (e.g. 16-bit TIFF), not colours."
        )
    if labels.ndim == 3:
        if not stack:
            raise UserError(
                f"{name} is a 3D volume {labels.shape}; pass it as a stack of 2D planes "
                "(--stack on the command line, 'stack of 2D planes' in the GUI)."
            )
        if image.shape[: labels.ndim] != labels.shape:
            raise UserError(
                f"{name}: image {image.shape} and labels {labels.shape} differ in shape."
            )
        return [(image[i], labels[i], f"{name}[{i}]") for i in range(labels.shape[0])]
    if labels.ndim != 2:
        raise UserError(
            f"{name}: labels must be 2D (or a stack of 2D planes), got {labels.shape}."
        )
    if image.ndim == 3 and image.shape[1:] == labels.shape and image.shape[0] <= 4:
        image = np.moveaxis(image, 0, -1)  # channels first -> last
    if image.shape[:2] != labels.shape:
        raise UserError(
            f"{name}: image {image.shape} and labels {labels.shape} differ in shape."
        )
    return [(image, labels, name)]


def from_arrays(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    names: Sequence[str] | None = None,
    stack: bool = False,
    source: str = "arrays",
) -> Dataset:
    """A dataset from (image, labels) pairs, e.g. napari layers' data."""
    samples = []
    for k, (image, labels) in enumerate(pairs):
        name = names[k] if names else f"image {k}"
        for plane, plane_labels, plane_name in _planes(image, labels, name, stack):
            if min(plane_labels.shape) < MIN_SIDE:
                h, w = plane_labels.shape
                raise UserError(
                    f"{plane_name} is {h} x {w} pixels; SAM needs images of at least "
                    f"{MIN_SIDE} x {MIN_SIDE} pixels."
                )
            samples.append(
                Sample(
                    normalize_image(plane, plane_name),
                    check_labels(plane_labels, f"labels of {plane_name}"),
                    plane_name,
                )
            )
    if not samples:
        raise UserError("No images were given.")
    if all(s.n_objects == 0 for s in samples):
        raise UserError(
            "The labels contain no objects; draw or load at least one object."
        )
    return Dataset(samples, source)


# -- tiles ------------------------------------------------------------------------


def relabel_consecutive(labels: np.ndarray, min_size: int = 1) -> np.ndarray:
    """Ids 1..n in order of first appearance, dropping objects under min_size."""
    ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = (ids != 0) & (counts >= min_size)
    mapping = np.zeros(len(ids), np.int32)
    mapping[keep] = np.arange(1, keep.sum() + 1)
    return mapping[inverse].reshape(labels.shape)


def split_tiles(sample: Sample, val_fraction: float) -> tuple[Sample, Sample]:
    """Split one image into a training and a validation tile along its long axis."""
    axis = int(sample.labels.shape[1] >= sample.labels.shape[0])
    length = sample.labels.shape[axis]
    cut = length - max(1, round(val_fraction * length))
    parts = []
    for part, suffix in (
        (slice(0, cut), "train tile"),
        (slice(cut, length), "val tile"),
    ):
        index = (slice(None), part) if axis else (part, slice(None))
        parts.append(
            Sample(
                sample.image[index],
                relabel_consecutive(sample.labels[index]),
                f"{sample.name} ({suffix})",
            )
        )
    return parts[0], parts[1]


def read_image(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Read a tif, png, jpg, or a dataset ``key`` of a zarr or hdf5 file."""
    path = Path(path)
    try:
        suffix = path.suffix.lower()
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                return f[_need_key(key, path)][()]
        if suffix == ".zarr":
            import zarr

            return np.asarray(zarr.open(str(path), mode="r")[_need_key(key, path)])
        if suffix in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        import imageio.v3 as iio

        return iio.imread(path)
    except UserError:
        raise
    except Exception as error:
        raise UserError(
            f"Cannot read {path} ({type(error).__name__}: {error})."
        ) from None


def _need_key(key: str | None, path: Path) -> str:
    if not key:
        raise UserError(
            f"{path} is a container file: pass the dataset name inside it with --key."
        )
    return key
