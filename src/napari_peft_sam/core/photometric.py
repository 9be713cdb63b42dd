"""Photometric augmentation for pretraining: the same nuclei, another camera.

Works on normalised images (float32 ``(H, W, 3)`` in 0..255, as
``core.data`` holds them) and never moves a pixel, so the labels stay valid.
Each augmented image gets a random subset of: gamma, contrast and offset,
dim 8-bit quantisation (many real 8-bit screens use a tenth of the range),
saturation, blur, Gaussian noise and smooth shading. Seeded by the caller's
generator.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .data import Dataset, Sample

PROBABILITY = 0.5  # share of the pretraining images that are augmented


def _gamma(rng, x):
    return 255 * (x / 255) ** np.exp(rng.uniform(np.log(0.5), np.log(2.0)))


def _contrast(rng, x):
    return x * rng.uniform(0.4, 1.4) + rng.uniform(-20, 40)


def _dim_eight_bit(rng, x):
    peak = rng.uniform(25, 90)  # the brightest nuclei end up at 25..90 of 255
    return np.round(x * peak / 255 + rng.uniform(0, 6))


def _saturate(rng, x):
    high = np.percentile(x, rng.uniform(85, 99))
    return x * 255 / max(high, 1.0)


def _blur(rng, x):
    return ndi.gaussian_filter(x, (rng.uniform(0.5, 2.0),) * 2 + (0,))


def _noise(rng, x):
    return x + rng.normal(0, rng.uniform(2, 15), x.shape[:2])[..., None]


def _shading(rng, x):
    h, w = x.shape[:2]
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    field = 1 + rng.normal(0, 0.3) * (yy - 0.5) + rng.normal(0, 0.3) * (xx - 0.5)
    return x * np.clip(field, 0.3, None)[..., None]


STEPS = (
    (_gamma, 0.5),
    (_contrast, 0.5),
    (_shading, 0.3),
    (_blur, 0.25),
    (_dim_eight_bit, 0.25),
    (_saturate, 0.2),
    (_noise, 0.35),
)


def photometric(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """One random photometric change of ``image`` (at least one step applies)."""
    x = image.astype(np.float64)
    chosen = [step for step, p in STEPS if rng.random() < p]
    if not chosen:
        chosen = [STEPS[rng.integers(len(STEPS))][0]]
    for step in chosen:
        x = step(rng, x)
    return np.clip(x, 0, 255).astype(np.float32)


def augment_photometric(
    dataset: Dataset, seed: int, probability: float = PROBABILITY
) -> Dataset:
    """A seeded ``probability`` share of the images changed by :func:`photometric`."""
    rng = np.random.default_rng(seed)
    out = []
    for sample in dataset:
        if rng.random() < probability:
            image = photometric(rng, sample.image)
            sample = Sample(image, sample.labels, f"{sample.name} (photometric)")
        out.append(sample)
    return Dataset(out, f"{dataset.source}, photometric {probability:.0%}")
