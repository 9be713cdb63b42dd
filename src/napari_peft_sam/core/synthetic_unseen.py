"""Two nuclei generators the demo model is never trained on: a held-out check.

Scores on images of the generator a model was trained with flatter it; the
demo card also reports mSA on images made by code that shares nothing with
``core.synthetic`` / ``core.synthetic_v4`` but numpy and scipy:

- ``star_convex``: StarDist-style star-convex polygons (random radial
  distances, smoothed) with flat or gradient fill, drawn without overlap on a
  dark field, Gaussian optics and noise (the look of StarDist's demo data);
- ``widefield``: nuclei as sums of Gaussian blobs (no sharp edge, labels at
  a fraction of each nucleus' peak), heavy out-of-focus haze, a speckled
  autofluorescent background, a 16-bit camera with offset and shot noise.

Both are seeded: ``unseen_pairs(name, n, seed)`` gives the same images for the
same arguments.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

SIZE = 256
SEED = 2_000_029  # the held-out images of both generators
MIN_SIZE = 12  # pixels


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Ids 1..n; each object its largest connected piece of >= MIN_SIZE pixels."""
    out = np.zeros_like(labels)
    n = 0
    for i in np.unique(labels)[1:]:
        parts, count = ndi.label(labels == i)
        if not count:
            continue
        sizes = np.bincount(parts.ravel())[1:]
        if sizes.max() >= MIN_SIZE:
            n += 1
            out[parts == 1 + int(np.argmax(sizes))] = n
    return out


def _star(rng, radius: float, rays: int = 32) -> np.ndarray:
    """Radial distances of a star-convex shape: smoothed, positive, circular."""
    raw = rng.normal(0, rng.uniform(0.08, 0.3), rays)
    smooth = ndi.gaussian_filter1d(raw, rng.uniform(1.0, 3.0), mode="wrap")
    return radius * np.clip(
        1 + smooth / max(np.abs(smooth).max(), 1e-9) * 0.35, 0.5, 1.6
    )


def star_convex_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """StarDist-style image: flat-filled star-convex nuclei on a dark field."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(float)
    labels = np.zeros((SIZE, SIZE), np.int32)
    signal = np.zeros((SIZE, SIZE))
    radius = rng.uniform(6, 18)
    for i in range(1, int(rng.uniform(0.1, 0.45) * SIZE**2 / (np.pi * radius**2)) + 1):
        r = radius * rng.uniform(0.7, 1.3)
        cy, cx = rng.uniform(-r / 2, SIZE + r / 2, 2)
        dist = _star(rng, r)
        theta = np.arctan2(yy - cy, xx - cx)
        index = ((theta + np.pi) / (2 * np.pi) * len(dist)).astype(int) % len(dist)
        inside = np.hypot(yy - cy, xx - cx) < dist[index]
        if not inside.any() or (labels[inside] > 0).mean() > 0.05:
            continue  # star-convex nuclei do not overlap
        inside &= labels == 0
        labels[inside] = i
        level = rng.uniform(0.4, 1.0)
        tilt = rng.normal(0, 0.3, 2) / r
        signal[inside] = level * (1 + tilt[0] * (yy - cy) + tilt[1] * (xx - cx))[inside]
    image = ndi.gaussian_filter(np.clip(signal, 0, None), rng.uniform(0.7, 1.8))
    image += rng.uniform(0.0, 0.15) + rng.normal(
        0, rng.uniform(0.01, 0.08), image.shape
    )
    image = np.clip(image, 0, 1) * rng.uniform(120, 255)
    return image.round().astype(np.uint8), _relabel(labels)


def widefield_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Widefield-style image: blob nuclei, out-of-focus haze, 16-bit camera."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(float)
    radius = rng.uniform(5, 16)
    n = int(rng.uniform(0.1, 0.4) * SIZE**2 / (np.pi * radius**2))
    best = np.zeros((SIZE, SIZE))  # each pixel's strongest nucleus (relative)
    labels = np.zeros((SIZE, SIZE), np.int32)
    signal = np.zeros((SIZE, SIZE))
    centres = []
    for i in range(1, n + 1):
        cy, cx = rng.uniform(0, SIZE, 2)
        if any(np.hypot(cy - y, cx - x) < 1.4 * radius for y, x in centres):
            continue  # crowded, not piled up
        centres.append((cy, cx))
        sy, sx = radius * rng.uniform(0.6, 1.2, 2) / 1.18  # 1.18: half-max radius
        angle = rng.uniform(0, np.pi)
        c, s = np.cos(angle), np.sin(angle)
        u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
        blob = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
        for _ in range(rng.integers(0, 3)):  # lumpy: a few sub-blobs
            dy, dx = rng.normal(0, 0.4, 2) * (sy, sx)
            w = rng.uniform(0.2, 0.5)
            blob += w * np.exp(-0.5 * (((u - dx) / sx) ** 2 + ((v - dy) / sy) ** 2) * 2)
        blob /= blob.max()
        mine = (blob > 0.4) & (blob > best)
        labels[mine], best[mine] = i, blob[mine]
        signal += rng.lognormal(0, 0.35) * blob
    haze = ndi.gaussian_filter(signal, rng.uniform(8, 20)) * rng.uniform(0.5, 2.0)
    speckle = ndi.gaussian_filter(rng.random((SIZE, SIZE)), 1.5)
    background = rng.uniform(0.05, 0.3) * (
        1 + 2 * (speckle - speckle.mean()) / speckle.std() * 0.1
    )
    light = (signal + haze + background) * rng.uniform(30, 800)
    image = rng.poisson(np.clip(light, 0, None)) + rng.normal(100, 3, light.shape)
    return np.clip(image, 0, 65535).astype(np.uint16), _relabel(labels)


GENERATORS = {"star_convex": star_convex_image, "widefield": widefield_image}


def unseen_pairs(name: str, n: int, seed: int = SEED):
    """``n`` (image, labels) pairs of generator ``name`` (see GENERATORS)."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n:
        image, labels = GENERATORS[name](rng)
        if labels.max() > 0:
            pairs.append((image, labels))
    return pairs


def unseen_dataset(name: str, n: int = 16, seed: int = SEED):
    """A :class:`~napari_peft_sam.core.data.Dataset` of one held-out generator."""
    from .data import from_arrays

    names = [f"{name}_{seed}_{k:03d}" for k in range(n)]
    dataset = from_arrays(unseen_pairs(name, n, seed), names)
    dataset.source = f"held-out generator {name!r} (seed {seed}, {n} images)"
    return dataset
