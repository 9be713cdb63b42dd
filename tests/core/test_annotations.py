"""Annotation sets: add-only, versioned, held-out share decided once; retrain records."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_peft_sam.core.annotations import (
    AnnotationSet,
    Item,
    array_hash,
    curve,
    list_sets,
)
from napari_peft_sam.core.errors import UserError


def item(k: int, objects: int = 2, clicks: int = 3, complete=True) -> Item:
    rng = np.random.default_rng(k)
    image = rng.integers(0, 255, (48, 40), dtype=np.uint8)
    labels = np.zeros((48, 40), np.int32)
    for j, row in enumerate([4, 36, 20][:objects]):  # one in the validation tile
        labels[row : row + 8, 5:30] = 7 * (j + 1)  # ids need not be 1..n
    effort = [{"clicks": clicks, "seconds": 2.0}] * objects
    return Item(image, labels, f"img_{k}.tif", complete, effort, "demo")


def test_adds_are_versions_of_files_the_cli_reads(tmp_path) -> None:
    from napari_peft_sam.core.sources import from_files, read_image

    aset = AnnotationSet.open(tmp_path, "cells", held_out_every=2)
    first = aset.add([item(0)])
    assert first == aset.manifest["versions"][0] and first["train"] == 1
    aset.add([item(1), item(2)])
    assert aset.version == 2 and list_sets(tmp_path) == ["cells"]
    v1, v2 = aset.folders(1), aset.folders(2)
    assert v1["held_out_images"] is None  # nothing held out yet
    train = from_files(v2["train_images"], v2["train_labels"])
    held = from_files(v2["held_out_images"], v2["held_out_labels"])
    assert (len(train), len(held)) == (2, 1)  # image 2 of 3 is held out
    entries = aset.manifest["images"]
    for entry in entries:  # the hashes are those of the stored pixels
        stored = read_image(aset.folder / "images" / entry["file"])
        assert array_hash(stored) == entry["image_sha256"]
        labels = read_image(aset.folder / "labels" / entry["file"])
        assert array_hash(labels) == entry["labels_sha256"]
        assert sorted(np.unique(labels)) == [0, 1, 2]  # ids made consecutive
    # a version holds copies: editing one never reaches the add-only original
    copy = v2["train_images"] / entries[0]["file"]
    assert (
        copy.read_bytes() == (aset.folder / "images" / entries[0]["file"]).read_bytes()
    )
    assert (
        copy.stat().st_ino
        != (aset.folder / "images" / entries[0]["file"]).stat().st_ino
    )
    assert entries[0]["effort"] == [{"clicks": 3, "seconds": 2.0}] * 2


def test_held_out_share_grows_and_never_changes(tmp_path) -> None:
    aset = AnnotationSet.open(tmp_path, "s", held_out_every=4)
    for k in range(8):
        aset.add([item(k)])
    held = [e["held_out"] for e in aset.manifest["images"]]
    assert held == [False, False, False, True] * 2
    counts = [(v["train"], v["held_out"]) for v in aset.manifest["versions"]]
    assert counts[3] == (3, 1) and counts[7] == (6, 2)
    # version 4 still holds exactly what it held when it was made
    assert len(os.listdir(aset.folders(4)["held_out_images"])) == 1
    assert len(os.listdir(aset.folders(4)["train_images"])) == 3
    # a reopened set keeps its rule even when asked for another
    again = AnnotationSet.open(tmp_path, "s", held_out_every=2)
    assert again.manifest["held_out_every"] == 4


def test_a_duplicate_image_is_refused_and_nothing_added(tmp_path) -> None:
    aset = AnnotationSet.open(tmp_path, "s")
    aset.add([item(0)])
    before = json.dumps(aset.manifest)
    with pytest.raises(UserError, match="already in set 's'") as error:
        aset.add([item(5), item(0)])
    assert str(error.value).count(".") <= 3  # one sentence (file names have dots)
    assert json.dumps(aset.manifest) == before
    assert not (aset.folder / "v0002").exists()


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (Item(np.zeros((40, 40)), np.zeros((40, 40), int), "e"), "no annotated"),
        (Item(np.zeros((40, 40)), np.ones((30, 40), int), "s"), "same size"),
        (Item(np.zeros((40, 40)), np.ones((40, 40)) * 0.5, "f"), "not integers"),
    ],
)
def test_bad_items_say_what_to_change(tmp_path, bad, match) -> None:
    aset = AnnotationSet.open(tmp_path, "s")
    with pytest.raises(UserError, match=match):
        aset.add([bad])
    assert aset.version == 0


def test_names_and_missing_sets(tmp_path) -> None:
    with pytest.raises(UserError, match="letters, digits"):
        AnnotationSet.open(tmp_path, "../escape")
    with pytest.raises(UserError, match="no annotation set"):
        AnnotationSet.open(tmp_path, "absent", create=False)
    with pytest.raises(UserError, match="2 or more"):
        AnnotationSet.open(tmp_path, "k1", held_out_every=1)


def test_effort_per_round_and_curve(tmp_path) -> None:
    aset = AnnotationSet.open(tmp_path, "s", held_out_every=3)
    aset.add([item(0, clicks=9), item(1, clicks=7)], round=0)
    aset.add([item(2, objects=1, clicks=2)], round=1)
    aset.record_run({"run_dir": "r1", "round": 1, "metrics": {"single box": 0.5}})
    rounds = aset.effort()
    assert [(e["round"], e["objects"], e["clicks_per_object"]) for e in rounds] == [
        (0, 4, 8.0),
        (1, 1, 2.0),
    ]
    points = curve(aset)
    assert [p["msa"] for p in points] == [None, 0.5]
    assert aset.summary()["round"] == 1 and aset.summary()["last_run"] == "r1"


def test_retrain_warm_starts_and_records_the_set_version(tmp_path) -> None:
    from napari_peft_sam.core.checkpoints import read_card
    from napari_peft_sam.core.events import run_to_end
    from napari_peft_sam.core.retrain import retrain
    from napari_peft_sam.core.store import rows

    storage = str(tmp_path / "results.journal")
    aset = AnnotationSet.open(tmp_path, "s", held_out_every=2)
    aset.add([item(0), item(1)])
    quick = {"iterations": 2, "val_interval": 1}

    def go(name, **kwargs):
        run = retrain(aset, tmp_path / name, train=quick, storage=storage, **kwargs)
        return run_to_end(run, lambda e: None)

    first = go("r1", model={"name": "tiny"}, method={"method": "lora", "rank": 2})
    assert first.annotation["version"] == 1 and first.annotation["round"] == 1
    assert first.annotation["effort"]["clicks_per_object"] == 3.0
    assert first.metrics["single box"] is not None  # on the held-out image
    aset.add([item(2)])
    second = go("r2", init_from=str(tmp_path / "r1"))
    card = read_card(tmp_path / "r2")
    config = card["run_config"]
    assert config["init_from"] == str(tmp_path / "r1")
    assert config["data"]["annotation"] == "annotation set 's' v0002"
    assert config["method"]["rank"] == 2  # the warm start's method
    assert config["data"]["images"] == [str(aset.folders(2)["train_images"])]
    assert "--init-from" in card["command"]
    table = rows(storage)
    assert [r["annotation"]["version"] for r in table] == [1, 2]  # both rows kept
    assert [r["round"] for r in aset.manifest["runs"]] == [1, 2]
    assert second.annotation["effort"]["objects"] == 2


def test_the_decoder_needs_complete_images(tmp_path) -> None:
    from napari_peft_sam.core.events import run_to_end
    from napari_peft_sam.core.retrain import retrain

    aset = AnnotationSet.open(tmp_path, "s")
    aset.add([item(0, complete=False)])
    with pytest.raises(UserError, match="every object"):
        run_to_end(
            retrain(
                aset,
                tmp_path / "r",
                model={"name": "tiny"},
                train={"iterations": 1, "with_decoder": True},
            ),
            lambda e: None,
        )
    assert not (tmp_path / "r").exists()


def test_a_retrain_runs_held_out_images_are_the_sets(tmp_path) -> None:
    """``core.splits.held_out`` of a retrain's config (what the bioimage.io
    package tests on) is the version's held-out images, not a split of its
    training images."""
    from napari_peft_sam.core import bioimageio_export, splits
    from napari_peft_sam.core.retrain import _retrain_config

    aset = AnnotationSet.open(tmp_path, "cells", held_out_every=2)
    aset.add([item(0), item(1), item(2), item(3)])
    config, _, held = _retrain_config(aset, None, None, None, None)
    names = [s.name for s in held]
    assert names and names == [s.name for s in splits.held_out(config)]
    card = {"run_config": config.to_dict()}
    assert [s.name for s in bioimageio_export.held_out(card)] == names
    empty = AnnotationSet.open(tmp_path, "one", held_out_every=2)
    empty.add([item(0)])
    with pytest.raises(UserError, match="no held-out image yet"):
        splits.held_out(_retrain_config(empty, None, None, None, None)[0])
