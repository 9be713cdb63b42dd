"""Domain-randomised synthetic nuclei: the pretraining images of demo model v4.

``core.synthetic`` (v3's generator) draws one acquisition style per image.
Real nuclei screens (the Data Science Bowl 2018 kind) still differ from it in
four ways this module randomises on top of it, per image:

- intensity profile: flat, dome (bright centre), rim (bright envelope) or
  hollow (dim centre) nuclei, not only v3's soft edge fall-off;
- touching clusters: tight clumps of nuclei pressed together (centre spacing
  down to 0.45 of the radius sum);
- out-of-focus light: image-wide defocus (a pillbox kernel) and unlabelled
  nuclei of another focal plane, blurred into the background;
- background texture: multi-scale blotches, fibres and debris specks.

Everything is seeded; ``v4_pairs(n, seed)`` gives the same images for the same
arguments. Labels follow the same rules as v3's (``synthetic.clean_labels``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .synthetic import (
    SIZE,
    TRAIN_SEED,
    _smooth_noise,
    acquire,
    clean_labels,
    draw_nuclei,
    draw_style,
    rasterise,
    render_signal,
)

PROFILES = ("soft", "flat", "dome", "rim", "hollow")


@dataclass(frozen=True)
class Randomisation:
    """What v4 adds to a v3 style, for one image."""

    profile: str  # intensity profile of the nuclei (one of PROFILES)
    profile_strength: float  # 0: v3's profile, 1: the full effect
    touching: bool  # tight clusters of nuclei pressed together
    defocus: float  # pillbox radius (px) of image-wide defocus, 0 for none
    ghosts: float  # unlabelled out-of-focus nuclei, per labelled nucleus
    texture: float  # background texture amplitude, relative to a typical nucleus
    fibres: bool  # oriented, fibre-like background texture
    debris: float  # small bright specks per 1000 px of background


def draw_randomisation(rng: np.random.Generator) -> Randomisation:
    """One image's randomisation; about a third of images keep v3's look."""
    plain = rng.random() < 0.3
    return Randomisation(
        profile="soft" if plain else str(rng.choice(PROFILES)),
        profile_strength=rng.uniform(0.3, 1.0),
        touching=bool(rng.random() < 0.4),
        defocus=0.0 if plain or rng.random() < 0.5 else rng.uniform(1.0, 4.0),
        ghosts=0.0 if plain or rng.random() < 0.5 else rng.uniform(0.1, 0.6),
        texture=0.0 if plain or rng.random() < 0.4 else rng.uniform(0.03, 0.25),
        fibres=bool(rng.random() < 0.3),
        debris=0.0 if rng.random() < 0.6 else rng.uniform(0.05, 0.6),
    )


def touching_style(rng, style):
    """A v3 style turned into tight, touching clusters."""
    return dataclasses.replace(
        style,
        clustered=True,
        separation=rng.uniform(0.45, 0.7),
        coverage=max(style.coverage, rng.uniform(0.25, 0.5)),
        radius=min(style.radius, 18.0),
    )


def profile_factor(profile: str, strength: float, rho: np.ndarray) -> np.ndarray:
    """Multiplier of the nucleus signal as a function of the normalised radius."""
    r = np.clip(rho, 0, 1)
    shapes = {
        "soft": np.ones_like(r),
        "flat": 1 + 0.3 * r**3,  # undoes part of v3's edge fall-off
        "dome": np.exp(-1.6 * r**2) / np.exp(-0.4),  # bright centre
        "rim": 0.55 + 0.75 * r**4,  # bright nuclear envelope
        "hollow": 0.45 + 0.55 * r**1.5,  # dim centre (large nucleoli, vacuoles)
    }
    return 1 + strength * (shapes[profile] - 1)


def _pillbox(field: np.ndarray, radius: float) -> np.ndarray:
    """Defocus: convolve with a uniform disc (a thin lens out of focus)."""
    k = int(np.ceil(radius))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    disc = ndi.gaussian_filter((np.hypot(yy, xx) <= radius).astype(float), 0.5)
    return ndi.convolve(field, disc / disc.sum(), mode="reflect")


def ghost_signal(rng, style, amount: float) -> np.ndarray:
    """Nuclei of another focal plane: unlabelled, dim and widely blurred."""
    ghost_style = dataclasses.replace(
        style, coverage=style.coverage * amount, clustered=False, separation=0.3
    )
    nuclei = draw_nuclei(rng, ghost_style)
    labels, _ = rasterise(nuclei)
    brightness = np.array([0.0] + [n.brightness for n in nuclei])
    field = brightness[labels] * rng.uniform(0.15, 0.5)
    return ndi.gaussian_filter(field, rng.uniform(3.0, 8.0))


def background_texture(rng, rand: Randomisation) -> np.ndarray:
    """Non-negative background structure (before optics), 1 = typical nucleus."""
    field = np.zeros((SIZE, SIZE))
    if rand.texture:
        for sigma in (2.0, 6.0, 16.0):  # blotches at three scales
            field += rng.uniform(0, 1) * _smooth_noise(rng, sigma)
        if rand.fibres:  # long, thin, oriented structures
            noise = rng.normal(size=(SIZE, SIZE))
            angle = rng.uniform(0, 180)
            rotated = ndi.rotate(noise, angle, reshape=False, mode="wrap")
            streaks = ndi.gaussian_filter(rotated, (12.0, 0.8))
            streaks = ndi.rotate(streaks, -angle, reshape=False, mode="wrap")
            field += 1.5 * streaks / max(streaks.std(), 1e-9)
        field = rand.texture * np.clip(field / max(field.std(), 1e-9), 0, None)
    if rand.debris:
        specks = rng.random((SIZE, SIZE)) < rand.debris / 1000
        field += ndi.gaussian_filter(specks * rng.uniform(1, 4), 0.8) * 6
    return field


def v4_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 or uint16, 256 x 256) and its instance labels (int32)."""
    style = draw_style(rng)
    rand = draw_randomisation(rng)
    if rand.touching:
        style = touching_style(rng, style)
    nuclei = draw_nuclei(rng, style)
    labels, rho = rasterise(nuclei)
    signal = render_signal(rng, style, nuclei, labels, rho)
    inside = labels > 0
    factor = profile_factor(rand.profile, rand.profile_strength, rho)
    signal = np.where(inside, signal * factor, signal)
    if rand.ghosts:
        signal = signal + ghost_signal(rng, style, rand.ghosts)
    signal = signal + background_texture(rng, rand)
    if rand.defocus:
        signal = _pillbox(signal, rand.defocus)
    return acquire(rng, style, signal), clean_labels(labels)


def v4_pairs(n: int, seed: int = TRAIN_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image, labels) pairs; the same ``seed`` gives the same images."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n:
        image, labels = v4_image(rng)
        if labels.max() > 0:
            pairs.append((image, labels))
    return pairs


def v4_dataset(n: int, seed: int = TRAIN_SEED):
    """A :class:`~napari_peft_sam.core.data.Dataset` of ``n`` v4 images."""
    from .data import from_arrays

    names = [f"v4_{seed}_{k:03d}" for k in range(n)]
    dataset = from_arrays(v4_pairs(n, seed), names)
    dataset.source = f"domain-randomised synthetic nuclei v4 (seed {seed}, {n} images)"
    return dataset
