"""Training patches: reproducible random square crops with enough objects."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .data import Dataset, relabel_consecutive
from .errors import UserError


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
