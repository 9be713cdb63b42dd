"""Synthetic fluorescence nuclei that look like real microscopy, with exact labels.

The ``demo`` model is pretrained on these images (``core.pretrain``). Each
image draws its own acquisition "style" (nucleus size and density, clustering,
shape irregularity, chromatin texture, brightness spread, mitoses,
out-of-focus nuclei, optical blur, background, vignetting, photon and read
noise, 8- or 16-bit output), so one seed gives a stream of images as diverse
as a collection of real fluorescence screens. Everything is seeded:
``synthetic_pairs(n, seed)`` returns the same images for the same arguments.

Write TIFF pairs for inspection or training::

    python -m napari_peft_sam.core.synthetic --out DIR --n 20 --seed 1

numpy, scipy and scikit-image only; a 256 x 256 image takes a few milliseconds.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

SIZE = 256
TRAIN_SEED = 0
HELD_OUT_SEED = 1_000_003  # never used for training images
MIN_OBJECT_SIZE = 12  # pixels; smaller label pieces (cut by the border) are dropped


@dataclass(frozen=True)
class Style:
    """The acquisition and specimen settings shared by all nuclei of one image."""

    radius: float  # typical nucleus radius (px)
    radius_spread: float  # log-normal sigma of radii
    coverage: float  # fraction of the field the nuclei would cover
    clustered: bool  # nuclei gather around a few cluster centres
    separation: float  # minimum centre distance, in units of the radius sum
    irregularity: float  # amplitude of the shape harmonics
    lobed: float  # fraction of lobed / kidney-shaped nuclei
    elongation: float  # maximal aspect ratio
    texture: float  # chromatin texture contrast
    spots: float  # chromatin spots per 100 px of nucleus area
    nucleoli: float  # darker nucleoli per nucleus
    edge_falloff: float  # how much dimmer a nucleus is at its rim (boundary contrast)
    brightness_spread: float  # log-normal sigma of nucleus brightness
    mitotic: float  # fraction of small, bright, compact nuclei
    out_of_focus: float  # fraction of blurred, dimmer nuclei
    blur: float  # optical blur sigma (px)
    background: float  # offset, relative to a typical nucleus
    uneven: float  # amplitude of smooth background variation
    vignetting: float  # relative darkening of the corners
    cytoplasm: float  # faint unlabelled glow around nuclei
    photons: float  # photons at a typical nucleus (sets Poisson noise)
    read_noise: float  # Gaussian noise sigma, relative to a typical nucleus
    eight_bit: bool  # uint8 output with a random gain (else uint16 with an offset)


def draw_style(rng: np.random.Generator) -> Style:
    """A random acquisition style; the ranges span typical fluorescence screens."""
    radius = float(np.exp(rng.uniform(np.log(4.5), np.log(30))))
    return Style(
        radius=radius,
        radius_spread=rng.uniform(0.08, 0.4),
        coverage=rng.uniform(0.08, 0.5),
        clustered=bool(rng.random() < 0.5),
        separation=rng.uniform(0.62, 1.1),
        irregularity=rng.uniform(0.0, 0.14),
        lobed=rng.uniform(0.0, 0.35),
        elongation=rng.uniform(1.0, 1.8),
        texture=rng.uniform(0.0, 0.45),
        spots=rng.uniform(0.0, 2.5),
        nucleoli=rng.choice([0.0, rng.uniform(0.5, 3)]),
        edge_falloff=rng.uniform(0.05, 0.7),
        brightness_spread=rng.uniform(0.1, 0.6),
        mitotic=rng.choice([0.0, rng.uniform(0.0, 0.12)]),
        out_of_focus=rng.choice([0.0, rng.uniform(0.0, 0.3)]),
        blur=rng.uniform(0.4, 2.6),
        background=rng.uniform(0.02, 0.45),
        uneven=rng.uniform(0.0, 0.35),
        vignetting=rng.uniform(0.0, 0.5),
        cytoplasm=rng.choice([0.0, rng.uniform(0.03, 0.15)]),
        photons=float(np.exp(rng.uniform(np.log(12), np.log(4000)))),
        read_noise=rng.uniform(0.0, 0.08),
        eight_bit=bool(rng.random() < 0.5),
    )


@dataclass
class Nucleus:
    cy: float
    cx: float
    radius: float
    aspect: float
    angle: float
    harmonics: np.ndarray  # (k, 3): order, amplitude, phase
    brightness: float
    mitotic: bool = False
    out_of_focus: bool = False


def _centres(rng, style: Style, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres with a minimum spacing; clustered styles pull them together."""
    margin = -0.4 * radii.max()  # centres may lie just outside: cut nuclei
    if style.clustered:
        hubs = rng.uniform(SIZE * 0.1, SIZE * 0.9, size=(rng.integers(1, 5), 2))
        spread = rng.uniform(2.5, 5) * style.radius
    centres, kept = np.zeros((len(radii), 2)), np.zeros(len(radii))
    n = 0
    for r in radii:
        for _ in range(30):  # rejection sampling; dense fields simply get fewer
            if style.clustered and rng.random() < 0.85:
                c = hubs[rng.integers(len(hubs))] + rng.normal(0, spread, 2)
            else:
                c = rng.uniform(margin, SIZE - margin, 2)
            d = np.hypot(*(centres[:n] - c).T)
            if not np.any(d < style.separation * (kept[:n] + r)):
                centres[n], kept[n] = c, r
                n += 1
                break
    return centres[:n], kept[:n]


def draw_nuclei(rng: np.random.Generator, style: Style) -> list[Nucleus]:
    """Nuclei of one image: sizes, shapes, positions and brightness."""
    n = int(np.clip(style.coverage * SIZE**2 / (np.pi * style.radius**2), 3, 160))
    radii = style.radius * np.exp(rng.normal(0, style.radius_spread, n))
    radii = np.clip(radii, 3.5, 42)
    centres, radii = _centres(rng, style, radii)
    nuclei = []
    for (cy, cx), r in zip(centres, radii, strict=True):
        k = np.arange(2, 6)
        amps = style.irregularity * rng.uniform(0, 1, len(k)) / (k - 1)
        if rng.random() < style.lobed:  # kidney / bean / bilobed nuclei
            amps[rng.integers(0, 2)] += rng.uniform(0.12, 0.25)
        harmonics = np.stack([k, amps, rng.uniform(0, 2 * np.pi, len(k))], 1)
        nucleus = Nucleus(
            cy,
            cx,
            r,
            rng.uniform(1.0, style.elongation),
            rng.uniform(0, np.pi),
            harmonics,
            float(np.exp(rng.normal(0, style.brightness_spread))),
        )
        if rng.random() < style.mitotic:  # condensed chromatin: small, bright plate
            nucleus.radius = max(3.5, r * rng.uniform(0.45, 0.7))
            nucleus.aspect = rng.uniform(1.3, 2.6)
            nucleus.brightness *= rng.uniform(2.0, 3.5)
            nucleus.harmonics[:, 1] *= 0.3
            nucleus.mitotic = True
        elif rng.random() < style.out_of_focus:
            nucleus.brightness *= rng.uniform(0.35, 0.8)
            nucleus.out_of_focus = True
        nuclei.append(nucleus)
    return nuclei


def _rho(nucleus: Nucleus, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Normalised radius: < 1 inside the nucleus, 1 on its boundary."""
    y, x = yy - nucleus.cy, xx - nucleus.cx
    c, s = np.cos(nucleus.angle), np.sin(nucleus.angle)
    stretch = np.sqrt(nucleus.aspect)
    z = (x * c + y * s) / stretch + 1j * (-x * s + y * c) * stretch
    distance = np.abs(z)
    # cos(k theta + phase) = Re(e^{i k theta} e^{i phase}), without arctan2 and cos
    unit = z / np.maximum(distance, 1e-9)
    wobble, power = np.ones_like(distance), unit
    for k, amp, phase in nucleus.harmonics:
        power = power * unit if k > 2 else unit * unit
        wobble += amp * (power * np.exp(1j * phase)).real
    return distance / (nucleus.radius * wobble)


def rasterise(nuclei: list[Nucleus]) -> tuple[np.ndarray, np.ndarray]:
    """Label image and normalised radius map.

    Overlapping nuclei split their overlap where each is equally deep inside
    (a weighted Voronoi boundary), as touching nuclei in a dense cluster do.
    """
    labels = np.zeros((SIZE, SIZE), np.int32)
    rho = np.full((SIZE, SIZE), np.inf)
    for i, nucleus in enumerate(nuclei, start=1):
        reach = nucleus.radius * np.sqrt(nucleus.aspect) * 1.6
        y0, y1 = (int(np.clip(nucleus.cy + d * reach, 0, SIZE)) for d in (-1, 1.01))
        x0, x1 = (int(np.clip(nucleus.cx + d * reach, 0, SIZE)) for d in (-1, 1.01))
        if y1 <= y0 + 1 or x1 <= x0 + 1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        r = _rho(nucleus, yy, xx)
        window = (slice(y0, y1), slice(x0, x1))
        win = (r < 1) & (r < rho[window])
        rho[window][win] = r[win]
        labels[window][win] = i
    return labels, rho


def _blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide kernels run on a block-averaged copy (10x faster)."""
    factor = int(sigma // 3)
    if factor < 2 or SIZE % factor:
        factor = next((f for f in (8, 4, 2) if f <= sigma // 3), 1)
    if factor == 1:
        return ndi.gaussian_filter(field, sigma)
    small = field.reshape(SIZE // factor, factor, SIZE // factor, factor).mean((1, 3))
    small = ndi.gaussian_filter(small, sigma / factor, mode="reflect")
    return ndi.zoom(small, factor, order=1, mode="nearest", grid_mode=True)


def _smooth_noise(rng, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered noise."""
    field = _blur(rng.normal(size=(SIZE, SIZE)), sigma)
    field -= field.mean()
    return field / max(field.std(), 1e-9)


def render_signal(rng, style: Style, nuclei, labels, rho) -> np.ndarray:
    """Fluorescence of the nuclei (before optics and camera), 1 = typical nucleus."""
    inside = labels > 0
    brightness = np.array([0.0] + [n.brightness for n in nuclei])
    flags = np.array([[False, False]] + [[n.mitotic, n.out_of_focus] for n in nuclei])
    mitotic, blurred = flags[labels, 0], flags[labels, 1]
    profile = 1 - style.edge_falloff * np.minimum(rho, 1) ** 3
    texture = 1 + style.texture * _smooth_noise(rng, rng.uniform(0.8, 2.5))
    texture = np.where(mitotic, 1 + 0.3 * (texture - 1), np.clip(texture, 0.2, None))
    signal = np.where(inside, brightness[labels] * profile * texture, 0.0)
    # chromatin spots (heterochromatin foci), brighter than the nucleoplasm
    spots = _impulses(rng, inside, style.spots * inside.sum() / 100, (2, 7))
    spots = ndi.gaussian_filter(spots, rng.uniform(0.7, 1.4)) * inside
    signal += spots * brightness[labels] * ~mitotic
    if style.nucleoli:  # darker, larger nucleoli deep inside
        sigma = max(0.8, 0.15 * style.radius)
        deep = (rho < 0.6) & ~mitotic
        holes = _impulses(rng, deep, style.nucleoli * len(nuclei), (1, 1))
        holes = ndi.gaussian_filter(holes, sigma) * 2 * np.pi * sigma**2
        signal *= 1 - rng.uniform(0.2, 0.6) * np.clip(holes, 0, 1)
    # touching nuclei: a faint dip where two labels meet
    edge = _label_contacts(labels)
    signal *= 1 - rng.uniform(0.1, 0.5) * ndi.gaussian_filter(edge, 0.7) / 0.4
    if blurred.any():  # out-of-focus nuclei: their own, wider blur
        far = ndi.gaussian_filter(signal * blurred, rng.uniform(1.5, 4))
        signal = signal * ~blurred + far
    if style.cytoplasm:
        glow = _blur(inside.astype(float), 0.8 * style.radius)
        signal += style.cytoplasm * glow * _smooth_noise(rng, 3).clip(-1, 2) ** 2
    return np.clip(signal, 0, None)


def _impulses(rng, where: np.ndarray, expected: float, heights) -> np.ndarray:
    """A Poisson number of point sources at random pixels of ``where``."""
    pixels = np.flatnonzero(where)
    n = rng.poisson(expected) if len(pixels) else 0
    field = np.zeros(SIZE * SIZE)
    np.add.at(field, rng.choice(pixels, n) if n else [], rng.uniform(*heights, n))
    return field.reshape(SIZE, SIZE)


def _label_contacts(labels: np.ndarray) -> np.ndarray:
    """1.0 on pixels of one nucleus that border another nucleus."""
    contact = np.zeros(labels.shape, bool)
    for axis in (0, 1):
        a = np.moveaxis(labels, axis, 0)
        differ = (a[1:] != a[:-1]) & (a[1:] > 0) & (a[:-1] > 0)
        c = np.moveaxis(contact, axis, 0)
        c[1:] |= differ
        c[:-1] |= differ
    return contact.astype(float)


def acquire(rng, style: Style, signal: np.ndarray) -> np.ndarray:
    """Optics and camera: blur, background, vignetting, noise, bit depth."""
    image = ndi.gaussian_filter(signal, style.blur)
    yy, xx = np.mgrid[:SIZE, :SIZE] / (SIZE - 1) - 0.5
    ramp = rng.normal(0, 0.5) * yy + rng.normal(0, 0.5) * xx
    background = style.background * (1 + style.uneven * (_smooth_noise(rng, 30) + ramp))
    image = image + np.clip(background, 0, None)
    centre = rng.uniform(-0.2, 0.2, 2)
    image *= 1 - style.vignetting * 2 * ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2)
    photons = rng.poisson(np.clip(image, 0, None) * style.photons).astype(float)
    photons += rng.normal(0, style.read_noise * style.photons, photons.shape)
    if style.eight_bit:  # brightest nuclei land anywhere from dim to saturated
        gain = rng.uniform(40, 300) / max(np.percentile(photons, 99.5), 1e-9)
        return np.clip(np.round(photons * gain + rng.uniform(0, 12)), 0, 255).astype(
            np.uint8
        )
    gain = rng.uniform(0.5, 4) * min(1.0, 30000 / max(photons.max() * 4, 1))
    offset = rng.uniform(90, 600)
    return np.clip(np.round(photons * gain + offset), 0, 65535).astype(np.uint16)


def clean_labels(labels: np.ndarray, min_size: int = MIN_OBJECT_SIZE) -> np.ndarray:
    """Ids 1..n, each one connected piece of at least ``min_size`` pixels.

    An object split in two (by a neighbour or the border) keeps its largest part.
    """
    from skimage.measure import label

    parts = label(labels, background=0, connectivity=1)
    sizes = np.bincount(parts.ravel())
    owner = np.zeros(len(sizes), np.int64)
    owner[parts.ravel()] = labels.ravel()
    best = np.zeros(labels.max() + 1, np.int64)  # largest part of each object
    order = np.argsort(sizes)
    best[owner[order]] = order
    keep = (best[owner] == np.arange(len(sizes))) & (sizes >= min_size)
    keep[0] = False
    mapping = np.zeros(len(sizes), np.int32)
    mapping[keep] = np.arange(1, keep.sum() + 1)
    return mapping[parts]


def synthetic_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 or uint16, 256 x 256) and its instance labels (int32)."""
    style = draw_style(rng)
    nuclei = draw_nuclei(rng, style)
    labels, rho = rasterise(nuclei)
    signal = render_signal(rng, style, nuclei, labels, rho)
    return acquire(rng, style, signal), clean_labels(labels)


def synthetic_pairs(
    n: int, seed: int = TRAIN_SEED
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image, labels) pairs; the same ``seed`` gives the same images."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n:
        image, labels = synthetic_image(rng)
        if labels.max() > 0:  # a sparse style can leave a field empty
            pairs.append((image, labels))
    return pairs


def synthetic_dataset(n: int, seed: int = TRAIN_SEED):
    """A :class:`~napari_peft_sam.core.data.Dataset` of ``n`` synthetic images."""
    from .data import from_arrays

    names = [f"synthetic_{seed}_{k:03d}" for k in range(n)]
    dataset = from_arrays(synthetic_pairs(n, seed), names)
    dataset.source = f"synthetic nuclei (seed {seed}, {n} images)"
    return dataset


def held_out_dataset(n: int = 16):
    """Synthetic images for evaluation, drawn from a seed no training set uses."""
    return synthetic_dataset(n, HELD_OUT_SEED)


def write_tiffs(out: Path, n: int, seed: int) -> list[Path]:
    """Write ``out/images/*.tif`` and ``out/labels/*.tif`` (zlib-compressed)."""
    from .files import atomic_write_tiff

    written = []
    for k, (image, labels) in enumerate(synthetic_pairs(n, seed)):
        name = f"synthetic_{k:03d}.tif"
        written.append(atomic_write_tiff(Path(out) / "images" / name, image))
        atomic_write_tiff(Path(out) / "labels" / name, labels.astype(np.uint16))
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Write synthetic fluorescence nuclei with their labels as TIFFs."
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--n", type=int, default=20, help="number of images")
    parser.add_argument(
        "--seed",
        type=int,
        default=HELD_OUT_SEED,
        help="random seed (same seed, same images)",
    )
    args = parser.parse_args(argv)
    written = write_tiffs(args.out, args.n, args.seed)
    print(f"wrote {len(written)} images and labels under {args.out}")


if __name__ == "__main__":
    main()
