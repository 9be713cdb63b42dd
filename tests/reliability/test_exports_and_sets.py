"""Exports, heatmaps and annotation sets never lose a user's file (issue 27,
items 1, 3, 4, 6, 9 and 10): exit code 2, one sentence, checksums unchanged."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_peft_sam.cli import main
from napari_peft_sam.core import files
from napari_peft_sam.core.annotations import AnnotationSet, Item
from napari_peft_sam.core.errors import UserError
from tests.helpers import one_sentence, snapshot


def small_run(path: Path) -> Path:
    """A run folder as training leaves it (tiny, LoRA rank 2), without training."""
    from napari_peft_sam.core.checkpoints import save_run
    from napari_peft_sam.core.methods import apply_method, make_config
    from napari_peft_sam.core.models import load_base_model

    sam, info = load_base_model("tiny")
    cfg = make_config("lora", {"rank": 2})
    save_run(path, apply_method(sam, cfg), info, cfg)
    return path


def export(run: Path, out, *extra: str) -> int:
    return main(
        ["export", "--run", str(run), "--format", "merged", "--out", str(out), *extra]
    )


@pytest.fixture
def runs(tmp_path):
    return small_run(tmp_path / "A"), small_run(tmp_path / "B")


# 1 -- the recipe beside an export is checked like the export --------------------


def test_an_export_never_replaces_another_runs_files(runs, tmp_path, capsys):
    a, b = runs
    before = snapshot(tmp_path)
    for out in (b / "card", b / "adapter_best.pt", b / "events.jsonl"):
        for extra in ((), ("--overwrite",)):
            assert export(a, out, *extra) == 2
            assert "one of the run's own files" in one_sentence(capsys)
    assert snapshot(tmp_path) == before


def test_the_recipe_is_checked_like_the_checkpoint(runs, tmp_path, capsys):
    a, _ = runs
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    (tmp_path / "dir.pt.json").mkdir()
    before = snapshot(tmp_path)
    assert export(a, tmp_path / "notes") == 2
    assert "notes.json already exists" in one_sentence(capsys)
    assert export(a, tmp_path / "notes", "--overwrite") == 2
    assert "not an export's recipe" in one_sentence(capsys)
    assert export(a, tmp_path / "dir.pt", "--overwrite") == 2
    assert "dir.pt.json is a folder" in one_sentence(capsys)
    assert snapshot(tmp_path) == before
    # an export's own recipe is replaced with it, both or neither
    assert export(a, tmp_path / "m.pt") == 0
    assert export(a, tmp_path / "m.pt") == 2
    assert "m.pt already exists" in one_sentence(capsys)
    assert export(a, tmp_path / "m.pt", "--overwrite") == 0
    from napari_peft_sam.core.models import file_hash

    recipe = json.loads((tmp_path / "m.pt.json").read_text())
    assert recipe["hash"] == file_hash(tmp_path / "m.pt")


def test_out_ending_in_a_slash_is_a_folder(runs, tmp_path, capsys):
    a, _ = runs
    assert export(a, f"{tmp_path / 'newdir'}/") == 0
    assert (tmp_path / "newdir").is_dir()
    assert (tmp_path / "newdir" / "A-merged.pt").is_file()
    assert (tmp_path / "newdir" / "A-merged.pt.json").is_file()
    assert "newdir/A-merged.pt" in capsys.readouterr().out


# 9 -- a full or read-only disk: one sentence, nothing half-written ---------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_failed_write_changes_nothing(runs, tmp_path, capsys, monkeypatch, code):
    a, _ = runs
    target = tmp_path / "out"
    target.mkdir()
    assert export(a, target / "m.pt") == 0
    capsys.readouterr()
    before = snapshot(tmp_path)

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, "fsync" if code == errno.ENOSPC else "replace", fail)
    assert export(a, target / "m.pt", "--overwrite") == 2
    assert f"({os.strerror(code)})" in one_sentence(capsys)
    assert export(a, target / "new.pt") == 2
    one_sentence(capsys)
    assert snapshot(tmp_path) == before  # no temporary file left either


# 6 -- NaN weights are refused ---------------------------------------------------------


def test_a_nan_adapter_is_not_exported(runs, tmp_path, capsys):
    a, _ = runs
    adapter = a / "adapter_best.pt"
    tensors = torch.load(adapter, weights_only=True)
    first = next(iter(tensors))
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    torch.save(tensors, adapter)
    before = snapshot(tmp_path)
    assert export(a, tmp_path / "x.pt") == 2
    assert "NaN or infinite" in one_sentence(capsys)
    assert snapshot(tmp_path) == before


# 6, 9 -- report --heatmap --------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    from napari_peft_sam.core.sweep import SweepSpec
    from napari_peft_sam.core.worker import run_worker
    from tests.sweep_helpers import SPEC, fake_runner

    storage = tmp_path / "s.journal"
    run_worker(
        str(storage), SweepSpec.from_dict(SPEC), tmp_path / "runs", runner=fake_runner
    )
    return storage


def heatmap(storage, *extra):
    return main(
        [
            "report",
            "--storage",
            str(storage),
            "--heatmap",
            "single box",
            "rank",
            "alpha",
            *extra,
        ]
    )


def test_heatmap_targets_are_checked(store, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "heatmap.png").write_bytes(b"my own picture")
    (tmp_path / "pics").mkdir()
    before = snapshot(tmp_path)
    cases = [
        ((), "heatmap.png already exists"),
        (("--out", str(store)), "is the results store"),
        (("--out", str(store), "--overwrite"), "is the results store"),
        (("--out", "missing/h.png"), "folder missing does not exist"),
        (("--out", "pics"), "pics is a folder"),
    ]
    for extra, message in cases:
        assert heatmap(store, *extra) == 2, extra
        assert message in one_sentence(capsys)
    assert snapshot(tmp_path) == before

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    assert heatmap(store, "--overwrite") == 2
    assert "No space left on device" in one_sentence(capsys)
    assert snapshot(tmp_path) == before
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert heatmap(store, "--overwrite") == 0
    assert (tmp_path / "heatmap.png").read_bytes().startswith(b"\x89PNG")


def test_demo_workdir_that_is_a_file(tmp_path, capsys):
    workdir = tmp_path / "results.txt"
    workdir.write_text("mine")
    assert main(["demo", "--workdir", str(workdir)]) == 2
    assert "is a file" in one_sentence(capsys)
    assert workdir.read_text() == "mine"


# 3, 4, 6, 10 -- annotation sets ------------------------------------------------------


def item(k: int, dtype=np.uint16, name=None) -> Item:
    image = np.random.default_rng(k).integers(0, 4000, (48, 40)).astype(dtype)
    labels = np.zeros((48, 40), np.int32)
    for j, row in enumerate((4, 20, 36)):
        labels[row : row + 8, 5:30] = j + 1
    return Item(image, labels, name or f"img_{k}.tif", True)


@pytest.fixture
def aset(tmp_path):
    aset = AnnotationSet.open(tmp_path, "cells")
    aset.add([item(0), item(1)])
    aset.add([item(2), item(3)])
    return aset


def test_editing_a_version_never_reaches_the_original(aset):
    from napari_peft_sam.core.files import atomic_write_tiff

    paths = aset.folders(1)
    original = aset.folder / "labels" / aset.manifest["images"][0]["file"]
    kept = original.read_bytes()
    copy = paths["train_labels"] / original.name
    atomic_write_tiff(copy, np.ones((48, 40), np.int32))
    assert original.read_bytes() == kept
    with pytest.raises(UserError, match="was changed or removed after version v0001"):
        aset.folders(1)
    train, held = aset.datasets(2)  # trained from the checked originals
    assert (len(train), len(held)) == (3, 1)


def test_a_changed_or_deleted_original_is_never_trained_on(aset):
    from napari_peft_sam.core.files import atomic_write_tiff

    original = aset.folder / "labels" / aset.manifest["images"][1]["file"]
    labels = np.zeros((48, 40), np.int32)
    labels[:8, :8] = 1
    atomic_write_tiff(original, labels)
    before = snapshot(aset.folder)
    with pytest.raises(UserError, match="was changed after it was added"):
        aset.datasets()
    with pytest.raises(UserError, match="was changed after it was added"):
        aset.folders(2)
    assert snapshot(aset.folder) == before  # and no version folder written
    original.unlink()
    with pytest.raises(UserError, match="is missing; put it back"):
        aset.datasets()
    with pytest.raises(UserError, match="is missing; put it back"):
        aset.add([item(9)])


def test_a_hard_linked_version_of_an_older_set_becomes_a_copy(aset):
    entry = aset.manifest["images"][0]
    root = aset.folder / "v0001" / "train"
    for kind in ("images", "labels"):
        (root / kind).mkdir(parents=True)
        os.link(aset.folder / kind / entry["file"], root / kind / entry["file"])
    for kind in ("images", "labels"):
        os.link(
            aset.folder / kind / aset.manifest["images"][1]["file"],
            root / kind / aset.manifest["images"][1]["file"],
        )
    aset.folders(1)
    link = root / "labels" / entry["file"]
    assert link.stat().st_nlink == 1
    assert not link.samefile(aset.folder / "labels" / entry["file"])


@pytest.mark.parametrize(
    "image, message",
    [
        (np.where(np.eye(48, 40) > 0, np.nan, 1.0).astype(np.float32), "NaN"),
        (np.zeros((48, 40, 5), np.uint8), "5 channels"),
    ],
    ids=["nan", "5-channels"],
)
def test_add_refuses_what_training_refuses(aset, image, message):
    before = snapshot(aset.folder)
    bad = item(7)
    with pytest.raises(UserError, match=message):
        aset.add([Item(image, bad.labels, "bad.tif", True)])
    assert snapshot(aset.folder) == before


def test_the_same_pixels_in_another_dtype_are_a_duplicate(aset):
    before = snapshot(aset.folder)
    same = item(0)
    for dtype in (np.float32, np.float64, np.int32):
        with pytest.raises(UserError, match="is already in set 'cells'"):
            aset.add([Item(same.image.astype(dtype), same.labels, "again.tif", True)])
    assert snapshot(aset.folder) == before


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text[: len(text) // 2], "damaged \\(JSONDecodeError\\)"),
        (lambda text: "[]", "damaged \\(not a mapping\\)"),
        (
            lambda text: text.replace('"held_out_every": 4', '"held_out_every": 0'),
            "held_out_every is 0",
        ),
    ],
    ids=["truncated", "list", "held-out-every-0"],
)
def test_a_damaged_manifest_is_one_sentence(aset, tmp_path, damage, message):
    manifest = aset.folder / "manifest.json"
    manifest.write_text(damage(manifest.read_text()))
    before = snapshot(aset.folder)
    with pytest.raises(UserError, match=message):
        AnnotationSet.open(tmp_path, "cells")
    for call in (aset.summary, aset.datasets, lambda: aset.add([item(8)])):
        with pytest.raises(UserError, match=message):
            call()
    assert snapshot(aset.folder) == before


def test_a_deleted_manifest_is_never_written_over(aset, tmp_path):
    (aset.folder / "manifest.json").unlink()
    before = snapshot(aset.folder)
    message = "manifest.json is damaged \\(missing, with images beside it\\)"
    for create in (True, False):  # adding would number over the images there
        with pytest.raises(UserError, match=message):
            AnnotationSet.open(tmp_path, "cells", create)
    with pytest.raises(UserError, match=message):
        AnnotationSet.find(tmp_path, "cells")
    assert AnnotationSet.find(tmp_path, "other") is None  # no set yet: not an error
    assert snapshot(aset.folder) == before
