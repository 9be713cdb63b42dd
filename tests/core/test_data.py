"""Datasets: sources, normalisation, splits, patches, and every bad input."""

from itertools import islice

import numpy as np
import pytest
import tifffile

from napari_peft_sam.cli import main
from napari_peft_sam.core.data import from_arrays, normalize_image
from napari_peft_sam.core.errors import UserError
from napari_peft_sam.core.patches import PatchSampler
from napari_peft_sam.core.sources import from_files, sample_dataset


def blobs(shape=(64, 64), n=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    for i in range(1, n + 1):
        y, x = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)
        labels[y - 5 : y + 5, x - 5 : x + 5] = i
    image = (labels > 0) * 1000.0 + rng.normal(300, 20, shape)
    return image.astype(np.uint16), labels


# -- sources and normalisation ---------------------------------------------


def test_sample_data_has_two_domains_with_exact_labels():
    nuclei, organoids = sample_dataset("nuclei"), sample_dataset("organoids")
    assert len(nuclei) == 12 and len(organoids) == 20
    assert nuclei.n_objects > 200 and organoids.n_objects > 100
    for sample in [*nuclei, *organoids]:
        ids = np.unique(sample.labels)
        assert list(ids) == list(range(len(ids)))  # consecutive ids
        assert sample.image.shape == (256, 256, 3) and sample.image.dtype == np.float32
    # nuclei are small, organoids large: visibly different domains
    mean_size = lambda d: np.mean([np.bincount(s.labels.ravel())[1:].mean() for s in d])  # noqa: E731
    assert mean_size(organoids) > 4 * mean_size(nuclei)


def test_organoids_never_touch_so_every_one_is_visible_on_its_own():
    """Touching organoids would merge into one dark blob whose split no prompt can see."""
    from scipy import ndimage as ndi

    for sample in sample_dataset("organoids"):
        for i in range(1, sample.labels.max() + 1):
            around = ndi.binary_dilation(sample.labels == i, iterations=8)
            assert set(np.unique(sample.labels[around])) == {0, i}, sample.name


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64]
)
def test_any_dtype_normalises_to_float_0_255(dtype):
    image, _ = blobs()
    image = (image / image.max() * (200 if dtype == np.uint8 else 3000)).astype(dtype)
    out = normalize_image(image)
    assert out.dtype == np.float32 and out.shape == (64, 64, 3)
    assert out.min() >= 0 and out.max() <= 255
    if dtype != np.uint8:
        assert out.max() > 250  # stretched to the full range


def test_uint8_is_kept_as_sam_was_trained():
    image = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 200
    np.testing.assert_array_equal(
        normalize_image(image.astype(np.uint8))[..., 0], image
    )


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((64, 64, 3), "rgb"),
        ((3, 64, 64), "channels first"),
        ((64, 64, 2), "two"),
        ((64, 64, 4), "rgba"),
    ],
)
def test_channel_layouts(shape, layout):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, shape).astype(np.uint8)
    _, labels = blobs()
    dataset = from_arrays([(image, labels)])
    assert dataset[0].image.shape == (64, 64, 3), layout


def test_stacks_from_napari_layers_become_planes():
    (i1, l1), (i2, l2) = blobs(seed=1), blobs(seed=2)
    dataset = from_arrays(
        [(np.stack([i1, i2]), np.stack([l1, l2]))], ["layer"], stack=True
    )
    assert [s.name for s in dataset] == ["layer[0]", "layer[1]"]


def test_folders_globs_and_name_matching(tmp_path):
    import imageio.v3 as iio

    (tmp_path / "im").mkdir()
    (tmp_path / "lab").mkdir()
    for k in range(3):
        image, labels = blobs(seed=k)
        iio.imwrite(tmp_path / "im" / f"s{k}_img.png", (image // 8).astype(np.uint8))
        tifffile.imwrite(tmp_path / "lab" / f"s{2 - k}_masks.tif", blobs(seed=2 - k)[1])
    dataset = from_files(str(tmp_path / "im" / "*.png"), tmp_path / "lab")
    assert [s.name for s in dataset] == ["s0_img.png", "s1_img.png", "s2_img.png"]
    # labels were paired by name, not by listing order
    np.testing.assert_array_equal(dataset[2].labels, blobs(seed=2)[1])


@pytest.mark.parametrize("container", ["h5", "zarr"])
def test_container_files_with_a_key(tmp_path, container):
    image, labels = blobs()
    path = tmp_path / f"data.{container}"
    if container == "h5":
        import h5py

        with h5py.File(path, "w") as f:
            f["raw"], f["seg"] = image, labels
    else:
        import zarr

        group = zarr.open_group(str(path), mode="w")
        group.create_array("raw", data=image)
        group.create_array("seg", data=labels)
    dataset = from_files(path, path, image_key="raw", label_key="seg")
    assert dataset.n_objects == 4
    with pytest.raises(UserError, match="pass the dataset name inside it with --key"):
        from_files(path, path)


# -- splits and patches -------------------------------------------------------


def test_split_is_deterministic_and_never_empty():
    dataset = from_arrays([blobs(seed=k) for k in range(5)])
    train, val = dataset.split(0.2, seed=3)
    again, val_again = dataset.split(0.2, seed=3)
    assert [s.name for s in val] == [s.name for s in val_again]
    assert len(train) == 4 and len(val) == 1
    two_train, two_val = from_arrays([blobs(seed=0), blobs(seed=1)]).split(0.01)
    assert len(two_train) == len(two_val) == 1


def test_a_single_image_is_split_into_tiles():
    image, labels = blobs((64, 128), n=8)
    train, val = from_arrays([(image, labels)]).split(0.25)
    assert train[0].labels.shape == (64, 96) and val[0].labels.shape == (64, 32)
    assert "val tile" in val[0].name


def test_patch_sampling_is_reproducible_padded_and_capped():
    dataset = from_arrays([blobs((48, 40), n=6, seed=k) for k in range(3)])
    first = [p.labels for p in islice(PatchSampler(dataset, 64, seed=7), 5)]
    second = [p.labels for p in islice(PatchSampler(dataset, 64, seed=7), 5)]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    patch = PatchSampler(dataset, 64, min_objects=2, max_objects=3, seed=1).sample()
    assert patch.image.shape == (64, 64, 3)  # padded from 48 x 40
    assert 2 <= patch.labels.max() <= 3
    assert list(np.unique(patch.labels)) == list(range(patch.labels.max() + 1))


# -- bad inputs: one clear sentence each ----------------------------------------

BAD_ARRAYS = [
    (lambda i, lab: (i[:32], lab), "differ in shape"),
    (lambda i, lab: (i, lab.astype(np.float32) + 0.5), "are not integers"),
    (lambda i, lab: (i, np.zeros_like(lab)), "contain no objects"),
    (lambda i, lab: (np.where(lab > 0, np.nan, i.astype(np.float32)), lab), "NaN"),
    (lambda i, lab: (np.stack([i] * 5, -1), lab), "5 channels; choose one or three"),
    (
        lambda i, lab: (np.stack([i] * 4), np.stack([lab] * 4)),
        "3D volume.*stack of 2D planes",
    ),
]


@pytest.mark.parametrize(("corrupt", "message"), BAD_ARRAYS)
def test_bad_arrays_give_one_sentence(corrupt, message):
    image, labels = corrupt(*blobs())
    with pytest.raises(UserError, match=message) as info:
        from_arrays([(image, labels)])
    assert str(info.value).count("\n") == 0


def _write_pair(folder, k=0):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    image, labels = blobs(seed=k)
    tifffile.imwrite(folder / "images" / f"a{k}.tif", image)
    tifffile.imwrite(folder / "labels" / f"a{k}.tif", labels)


def test_bad_files_give_exit_code_2_and_one_sentence(tmp_path, capsys):
    _write_pair(tmp_path / "ok", 0)
    _write_pair(tmp_path / "ok", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a0.tif").write_bytes(b"not a tiff")
    cases = [
        (
            [
                "--images",
                str(tmp_path / "empty"),
                "--labels",
                str(tmp_path / "ok/labels"),
            ],
            "contains no images",
        ),
        (
            [
                "--images",
                str(tmp_path / "nothing*.tif"),
                "--labels",
                str(tmp_path / "ok/labels"),
            ],
            "matches no files",
        ),
        (
            [
                "--images",
                str(tmp_path / "ok/images/a0.tif"),
                "--labels",
                str(tmp_path / "ok/labels"),
            ],
            "1 images but 2 label files",
        ),
        (
            [
                "--images",
                str(tmp_path / "broken"),
                "--labels",
                str(tmp_path / "ok/labels/a0.tif"),
            ],
            "Cannot read",
        ),
        (
            [
                "--images",
                str(tmp_path / "missing"),
                "--labels",
                str(tmp_path / "ok/labels"),
            ],
            "does not exist",
        ),
        (["--dataset", "nosuchset"], "Unknown dataset 'nosuchset'"),
    ]
    for argv, message in cases:
        assert main(["data", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (argv, err)


def test_cli_summarises_sample_data(capsys):
    assert main(["data", "--dataset", "nuclei", "--json"]) == 0
    assert '"images": 12' in capsys.readouterr().out
