"""Datasets for training, evaluation and sweeps: one abstraction, one normalisation.

A :class:`Dataset` is a list of :class:`Sample` (one 2D image, normalised to
float32 ``(H, W, 3)`` in 0..255 as SAM expects, plus its instance labels). It is
built from in-memory arrays (napari layers), folders or glob patterns, the
shipped sample data, or a benchmark dataset (``core.benchmarks``). Every input
check raises :class:`~napari_peft_sam.core.errors.UserError` with one sentence
saying what to change.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import UserError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".zarr", ".h5", ".hdf5")
SAMPLE_DOMAINS = ("nuclei", "organoids")
# name parts that distinguish an image from its labels: "x_img.tif" <-> "x_masks.png"
_ROLE_WORDS = r"(img|image|raw|im|label|labels|mask|masks|seg|gt|instances)"


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
        from .benchmarks import benchmark_dataset

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


# -- tiles and patches ---------------------------------------------------------


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


@dataclass(frozen=True)
class Patch:
    image: np.ndarray  # float32 (P, P, 3)
    labels: np.ndarray  # int32 (P, P), ids 1..n
    source: str


def pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad the first two axes up to ``size`` (images smaller than a patch)."""
    pad_h, pad_w = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if not (pad_h or pad_w):
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths)


class PatchSampler:
    """Reproducible random square patches with enough objects for training.

    Patches hold at least ``min_objects`` objects of at least ``min_size``
    pixels (ids are relabelled 1..n); at most ``max_objects`` of them are
    kept. Images smaller than the patch are zero-padded.
    """

    def __init__(
        self,
        dataset: Dataset,
        patch_size: int,
        min_objects: int = 1,
        max_objects: int | None = None,
        min_size: int = 10,
        seed: int = 0,
        max_attempts: int = 200,
    ) -> None:
        if not any(s.n_objects for s in dataset):
            raise UserError(
                "The labels contain no objects; draw or load at least one object."
            )
        self.dataset, self.patch_size = dataset, patch_size
        self.min_objects, self.max_objects = min_objects, max_objects
        self.min_size, self.max_attempts = min_size, max_attempts
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[Patch]:
        while True:
            yield self.sample()

    def sample(self) -> Patch:
        best = None
        for _ in range(self.max_attempts):
            patch = self._random_patch()
            n = int(patch.labels.max())
            if n >= self.min_objects:
                return self._cap(patch)
            if best is None or n > best.labels.max():
                best = patch
        if best is None or best.labels.max() == 0:
            raise UserError(
                f"No {self.patch_size}x{self.patch_size} patch holds an object of "
                f"{self.min_size} pixels or more; use a larger patch or check the labels."
            )
        return self._cap(best)  # fewer objects than asked, but never an empty patch

    def _random_patch(self) -> Patch:
        sample = self.dataset[int(self.rng.integers(len(self.dataset)))]
        size = self.patch_size
        image, labels = pad_to(sample.image, size), pad_to(sample.labels, size)
        y = int(self.rng.integers(labels.shape[0] - size + 1))
        x = int(self.rng.integers(labels.shape[1] - size + 1))
        window = (slice(y, y + size), slice(x, x + size))
        return Patch(
            image[window],
            relabel_consecutive(labels[window], self.min_size),
            sample.name,
        )

    def _cap(self, patch: Patch) -> Patch:
        n = int(patch.labels.max())
        if self.max_objects is None or n <= self.max_objects:
            return patch
        keep = np.sort(
            self.rng.choice(np.arange(1, n + 1), self.max_objects, replace=False)
        )
        labels = np.where(np.isin(patch.labels, keep), patch.labels, 0)
        return Patch(patch.image, relabel_consecutive(labels), patch.source)
