"""The synthetic fluorescence nuclei the demo model is pretrained on."""

import dataclasses
import time

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_peft_sam.core import synthetic as syn
from napari_peft_sam.core.pretrain import augment


@pytest.fixture(scope="module")
def pairs():
    return syn.synthetic_pairs(40, seed=7)


def _radii(labels):
    sizes = np.bincount(labels.ravel())[1:]
    return np.sqrt(sizes[sizes > 0] / np.pi)


def test_same_seed_same_images_other_seed_other_images():
    a, b = syn.synthetic_pairs(3, seed=5), syn.synthetic_pairs(3, seed=5)
    for (ia, la), (ib, lb) in zip(a, b, strict=True):
        assert np.array_equal(ia, ib) and np.array_equal(la, lb)
    other = syn.synthetic_pairs(1, seed=6)[0][0]
    assert not np.array_equal(a[0][0], other)
    assert syn.HELD_OUT_SEED != syn.TRAIN_SEED


def test_a_few_hundred_images_take_seconds():
    started = time.process_time()  # CPU time: other processes do not count
    syn.synthetic_pairs(30, seed=1)
    assert (time.process_time() - started) / 30 < 0.1  # ~0.03 s measured


def test_images_are_camera_like_8_and_16_bit(pairs):
    dtypes = {image.dtype for image, _ in pairs}
    assert dtypes == {np.dtype(np.uint8), np.dtype(np.uint16)}
    for image, labels in pairs:
        assert image.shape == labels.shape == (syn.SIZE, syn.SIZE)
    # 8-bit images are not all stretched: some are dim, some saturate
    peaks = [np.percentile(i, 99.9) for i, _ in pairs if i.dtype == np.uint8]
    assert min(peaks) < 120 and max(peaks) == 255


def test_labels_are_consecutive_single_pieces(pairs):
    for _, labels in pairs:
        ids = np.unique(labels)[1:]
        assert np.array_equal(ids, np.arange(1, len(ids) + 1))
        for i in ids[:20]:
            assert ndi.label(labels == i)[1] == 1
        assert np.bincount(labels.ravel())[1:].min() >= syn.MIN_OBJECT_SIZE


def test_nuclei_span_the_size_range_and_density(pairs):
    radii = np.concatenate([_radii(labels) for _, labels in pairs])
    typical = [np.median(_radii(labels)) for _, labels in pairs]
    assert min(typical) < 6 and max(typical) > 20  # small-nucleus and zoomed-in fields
    assert np.percentile(radii, 1) < 5 and radii.max() > 30
    counts = [labels.max() for _, labels in pairs]
    assert min(counts) < 10 and max(counts) > 100


def test_touching_nuclei_keep_their_own_labels_with_a_faint_boundary(pairs):
    contacts, fainter = 0, []
    for image, labels in pairs:
        edge = syn._label_contacts(labels) > 0
        contacts += edge.sum()
        if edge.sum() < 200:
            continue
        touching = np.isin(labels, np.unique(labels[edge]))
        inside = ndi.binary_erosion(touching, iterations=3)
        background = np.median(image[labels == 0])
        boundary = np.median(image[edge])
        fainter.append(boundary < np.median(image[inside]))
        assert boundary > background  # visible: the boundary is not background
    assert contacts > 1000
    assert np.mean(fainter) > 0.8  # but darker than the nuclei it separates


def test_dim_and_bright_nuclei_in_one_image(pairs):
    ratios = []
    for image, labels in pairs:
        if labels.max() < 10:
            continue
        background = np.percentile(image[labels == 0], 50)
        means = ndi.mean(image.astype(float), labels, np.arange(1, labels.max() + 1))
        signal = np.clip(means - background, 1e-3, None)
        ratios.append(np.percentile(signal, 95) / np.percentile(signal, 5))
    assert max(ratios) > 4


def _signal(style, seed=0):
    rng = np.random.default_rng(seed)
    nuclei = syn.draw_nuclei(rng, style)
    labels, rho = syn.rasterise(nuclei)
    return nuclei, labels, syn.render_signal(rng, style, nuclei, labels, rho)


def test_chromatin_texture_and_mitoses():
    style = syn.draw_style(np.random.default_rng(3))
    plain = dataclasses.replace(
        style,
        texture=0,
        spots=0,
        nucleoli=0,
        mitotic=0,
        out_of_focus=0,
        edge_falloff=0.05,
    )
    textured = dataclasses.replace(plain, texture=0.4, spots=2.0)
    _, labels, flat = _signal(plain)
    _, _, rough = _signal(textured)
    core = np.where(ndi.binary_erosion(labels > 0, iterations=2), labels, 0)
    ids = np.unique(core)[1:]

    def variation(signal):  # within each nucleus, not between nuclei
        spread = ndi.standard_deviation(signal, core, ids)
        return np.mean(spread / ndi.mean(signal, core, ids))

    assert variation(rough) > 3 * variation(flat)
    nuclei, _, _ = _signal(dataclasses.replace(plain, mitotic=1.0))
    normal, _, _ = _signal(plain)
    assert all(n.mitotic for n in nuclei)
    assert np.mean([n.radius for n in nuclei]) < 0.75 * np.mean(
        [n.radius for n in normal]
    )
    assert np.mean([n.brightness for n in nuclei]) > 1.8 * np.mean(
        [n.brightness for n in normal]
    )


def test_out_of_focus_nuclei_are_blurred_and_dimmer():
    style = syn.draw_style(np.random.default_rng(4))
    sharp = dataclasses.replace(style, out_of_focus=0, mitotic=0, texture=0, spots=0)
    _, labels, a = _signal(sharp)
    _, _, b = _signal(dataclasses.replace(sharp, out_of_focus=1.0))
    inside = labels > 0
    assert b[inside].mean() < 0.85 * a[inside].mean()
    assert (b[~inside] > 0.05).sum() > (a[~inside] > 0.05).sum()  # light spills out


def test_styles_cover_blur_noise_background_and_vignetting():
    styles = [syn.draw_style(np.random.default_rng(s)) for s in range(200)]
    for name, low, high in (
        ("blur", 0.8, 2.0),
        ("photons", 50, 1000),
        ("read_noise", 0.01, 0.06),
        ("uneven", 0.05, 0.25),
        ("vignetting", 0.1, 0.4),
        ("radius", 6, 20),
    ):
        values = [getattr(s, name) for s in styles]
        assert min(values) < low and max(values) > high, name
    assert any(s.clustered for s in styles) and not all(s.clustered for s in styles)


def test_cli_writes_tiff_pairs(tmp_path):
    syn.main(["--out", str(tmp_path), "--n", "2", "--seed", "9"])
    expected = syn.synthetic_pairs(2, seed=9)
    for k, (image, labels) in enumerate(expected):
        name = f"synthetic_{k:03d}.tif"
        assert np.array_equal(tifffile.imread(tmp_path / "images" / name), image)
        assert np.array_equal(tifffile.imread(tmp_path / "labels" / name), labels)


def test_letterboxed_training_images_are_padded_as_inference_pads():
    data = syn.synthetic_dataset(6, seed=2)
    padded = augment(data, seed=0, letterbox=1.0, tint=0.0)
    mean = np.array([123.675, 116.28, 103.53], np.float32)
    for sample in padded:
        band = np.all(sample.image == mean, axis=-1)
        assert 0.1 < band.mean() < 0.55
        assert (sample.labels[band] == 0).all() and sample.labels.max() > 0
    coloured = augment(data, seed=0, letterbox=0.0, tint=1.0)
    for before, after in zip(data, coloured, strict=True):
        channels = after.image.reshape(-1, 3).max(axis=0)
        assert 1 <= np.count_nonzero(channels) <= 2
        assert np.array_equal(before.labels, after.labels)
