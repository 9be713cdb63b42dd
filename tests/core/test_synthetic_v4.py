"""Demo model v4's pretraining data: domain-randomised nuclei, photometric changes,
and the two generators it is never trained on."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_peft_sam.core import synthetic as syn
from napari_peft_sam.core import synthetic_unseen as unseen
from napari_peft_sam.core import synthetic_v4 as v4
from napari_peft_sam.core.data import from_arrays
from napari_peft_sam.core.photometric import augment_photometric, photometric


@pytest.fixture(scope="module")
def pairs():
    return v4.v4_pairs(30, seed=3)


def _single_pieces(labels):
    ids = np.unique(labels)[1:]
    assert np.array_equal(ids, np.arange(1, len(ids) + 1))
    for i in ids[:15]:
        assert ndi.label(labels == i)[1] == 1
    assert np.bincount(labels.ravel())[1:].min() >= syn.MIN_OBJECT_SIZE


def test_v4_is_seeded_and_labels_are_clean(pairs):
    again = v4.v4_pairs(2, seed=3)
    for (a, la), (b, lb) in zip(pairs[:2], again, strict=True):
        assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(v4.v4_pairs(1, seed=4)[0][0], pairs[0][0])
    for image, labels in pairs:
        assert image.shape == labels.shape == (syn.SIZE, syn.SIZE)
        assert image.dtype in (np.uint8, np.uint16)
        _single_pieces(labels)


def test_randomisation_covers_profiles_clusters_defocus_and_texture():
    draws = [v4.draw_randomisation(np.random.default_rng(s)) for s in range(300)]
    assert {d.profile for d in draws} == set(v4.PROFILES)
    for field in ("defocus", "ghosts", "texture", "debris"):
        values = [getattr(d, field) for d in draws]
        assert 0.2 < np.mean(np.array(values) > 0) < 0.8, field
    assert 0.2 < np.mean([d.touching for d in draws]) < 0.6


def test_profiles_shape_the_nucleus_intensity():
    rho = np.array([0.0, 0.5, 0.95])
    dome = v4.profile_factor("dome", 1.0, rho)
    rim = v4.profile_factor("rim", 1.0, rho)
    assert dome[0] > dome[2] and rim[2] > rim[0]
    assert np.allclose(v4.profile_factor("rim", 0.0, rho), 1)


def test_touching_styles_pack_nuclei_against_each_other():
    def contacts(style):
        rng = np.random.default_rng(0)
        labels, _ = syn.rasterise(syn.draw_nuclei(rng, style))
        return syn._label_contacts(labels).sum() / max((labels > 0).sum(), 1)

    style = dataclasses.replace(
        syn.draw_style(np.random.default_rng(1)), radius=10.0, separation=1.0
    )
    tight = v4.touching_style(np.random.default_rng(2), style)
    assert contacts(tight) > 2 * contacts(style)


def test_defocus_spreads_light_and_ghosts_stay_unlabelled():
    field = np.zeros((syn.SIZE, syn.SIZE))
    field[100:110, 100:110] = 1
    blurred = v4._pillbox(field, 3.0)
    assert np.isclose(blurred.sum(), field.sum()) and (blurred > 0.01).sum() > 200
    style = syn.draw_style(np.random.default_rng(5))
    ghosts = v4.ghost_signal(np.random.default_rng(6), style, 0.5)
    steepest = np.abs(np.diff(ghosts, axis=0)).max()
    assert ghosts.max() > 0 and steepest < 0.3 * ghosts.max()  # no sharp edge


@pytest.mark.parametrize("name", sorted(unseen.GENERATORS))
def test_held_out_generators_are_seeded_with_clean_labels(name):
    a, b = unseen.unseen_pairs(name, 3, seed=1), unseen.unseen_pairs(name, 3, seed=1)
    for (ia, la), (ib, lb) in zip(a, b, strict=True):
        assert np.array_equal(ia, ib) and np.array_equal(la, lb)
        assert la.max() >= 3 and ia.shape == (unseen.SIZE, unseen.SIZE)
        _single_pieces(la)
        inside = np.median(ia[la > 0].astype(float))
        assert inside > np.median(ia[la == 0].astype(float))  # nuclei are brighter


def test_held_out_generators_share_no_code_with_the_training_ones():
    import inspect

    source = inspect.getsource(unseen)
    assert "synthetic_v4" not in source.split('"""', 2)[2]
    assert "from .synthetic" not in source


def test_photometric_keeps_labels_and_range_and_changes_half():
    data = from_arrays(syn.synthetic_pairs(20, seed=2))
    out = augment_photometric(data, seed=0, probability=0.5)
    changed = 0
    for before, after in zip(data, out, strict=True):
        assert np.array_equal(before.labels, after.labels)
        assert (
            after.image.dtype == np.float32 and after.image.shape == before.image.shape
        )
        assert after.image.min() >= 0 and after.image.max() <= 255
        changed += not np.array_equal(before.image, after.image)
    assert 4 <= changed <= 16
    again = augment_photometric(data, seed=0, probability=0.5)
    assert all(
        np.array_equal(a.image, b.image) for a, b in zip(out, again, strict=True)
    )
    image = data[0].image
    assert not np.array_equal(photometric(np.random.default_rng(1), image), image)
