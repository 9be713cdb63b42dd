"""Make the shipped sample data: two microscopy-like domains with exact labels.

``nuclei``: 16-bit fluorescence nuclei (touching ellipses of varied size and
brightness, blur, uneven background, Poisson and read noise). ``organoids``:
8-bit phase-contrast-like organoids (large irregular lobed objects with a dark
interior and a bright halo on a textured grey field), a domain on which a model
trained on ``nuclei`` does poorly.

Run ``python make_sample_data.py`` to regenerate the TIFFs next to this file;
the output is identical for the same seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

SIZE = 256
GAP = 10  # pixels between organoids
HERE = Path(__file__).parent


def _ellipse(shape, cy, cx, ry, rx, theta):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    y, x = yy - cy, xx - cx
    c, s = np.cos(theta), np.sin(theta)
    return ((x * c + y * s) / rx) ** 2 + ((-x * s + y * c) / ry) ** 2 <= 1


def _background(rng, shape, scale):
    ramp = np.linspace(0, 1, shape[1])[None] * rng.uniform(-1, 1)
    ramp = ramp + np.linspace(0, 1, shape[0])[:, None] * rng.uniform(-1, 1)
    blobs = ndi.gaussian_filter(rng.normal(size=shape), 24)
    return scale * (ramp - ramp.min() + 8 * blobs)


def nuclei_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((SIZE, SIZE), np.uint16)
    signal = np.zeros((SIZE, SIZE), np.float64)
    for i in range(1, rng.integers(15, 36) + 1):
        ry, rx = rng.uniform(6, 16, size=2)
        cy, cx = rng.uniform(8, SIZE - 8, size=2)
        mask = _ellipse(labels.shape, cy, cx, ry, rx, rng.uniform(0, np.pi))
        labels[mask] = i  # later nuclei overlap earlier ones: touching objects
        texture = 1 + 0.15 * ndi.gaussian_filter(rng.normal(size=labels.shape), 2)
        signal[mask] = rng.uniform(0.4, 1.0) * texture[mask]
    image = ndi.gaussian_filter(signal, rng.uniform(0.8, 1.8)) * 9000
    image += 600 + _background(rng, labels.shape, 250)
    image = rng.poisson(np.clip(image, 0, None)) + rng.normal(0, 80, labels.shape)
    return np.clip(image, 0, 65535).astype(np.uint16), _relabel(labels)


def _lobed_mask(rng, cy, cx, radius):
    yy, xx = np.ogrid[:SIZE, :SIZE]
    angle = np.arctan2(yy - cy, xx - cx)
    lobes = rng.integers(3, 6)
    wobble = 1 + 0.25 * np.sin(lobes * angle + rng.uniform(0, 2 * np.pi))
    wobble += 0.08 * np.sin(2 * lobes * angle + rng.uniform(0, 2 * np.pi))
    return np.hypot(yy - cy, xx - cx) <= radius * wobble


def organoid_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Organoids that do not touch: each has its own halo, so every object is
    visible as one (touching ones would merge into one dark blob)."""
    labels = np.zeros((SIZE, SIZE), np.uint16)
    wanted, placed = rng.integers(4, 9), 0
    for _ in range(50):  # placement attempts
        if placed == wanted:
            break
        cy, cx = rng.uniform(24, SIZE - 24, size=2)
        mask = _lobed_mask(rng, cy, cx, rng.uniform(16, 34))
        if (labels[ndi.binary_dilation(mask, iterations=GAP)] > 0).any():
            continue
        placed += 1
        labels[mask] = placed
    labels = _relabel(labels)
    field = 120 + _background(rng, labels.shape, 2.5)
    field += 6 * ndi.gaussian_filter(rng.normal(size=labels.shape), 1.5)
    inside = labels > 0
    edge = inside & ~ndi.binary_erosion(inside, iterations=3)
    halo = ndi.binary_dilation(inside, iterations=4) & ~inside
    core_texture = 14 * ndi.gaussian_filter(rng.normal(size=labels.shape), 3)
    image = field.copy()
    image[inside] = 70 + core_texture[inside]
    image[edge] = 150
    image[halo] = 185
    image = ndi.gaussian_filter(image, 1.2) + rng.normal(0, 7, labels.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Consecutive ids, each a single connected component of >= 20 pixels."""
    out = np.zeros_like(labels)
    next_id = 1
    for i in np.unique(labels[labels > 0]):
        parts, n = ndi.label(labels == i)
        for j in range(1, n + 1):
            part = parts == j
            if part.sum() >= 20:
                out[part] = next_id
                next_id += 1
    return out


# (image maker, seed, number of images)
DOMAINS = {"nuclei": (nuclei_image, 0, 12), "organoids": (organoid_image, 1, 20)}


def make(root: Path = HERE) -> None:
    for domain, (make_image, seed, n_images) in DOMAINS.items():
        rng = np.random.default_rng(seed)
        for sub in ("images", "labels"):
            (root / domain / sub).mkdir(parents=True, exist_ok=True)
        for k in range(n_images):
            image, labels = make_image(rng)
            name = f"{domain}_{k:02d}.tif"
            tifffile.imwrite(root / domain / "images" / name, image, compression="zlib")
            tifffile.imwrite(
                root / domain / "labels" / name, labels, compression="zlib"
            )


if __name__ == "__main__":
    make()
    print(f"wrote sample data under {HERE}")
