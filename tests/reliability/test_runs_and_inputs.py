"""Issue 27, items 8-11 for runs and inputs: damaged run folders, bad inputs and
signals during a run's evaluation get exit 2 (or 143) and one sentence, and no
file the user had changes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_peft_sam.cli import main
from tests.helpers import one_sentence, snapshot
from tests.test_reliability import QUICK, train

EVALUATE = ["evaluate", "--dataset", "organoids", "--split", "val"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert train(root) == 0
    assert train(root, "rank4", "--set", "rank=4") == 0
    return root


@pytest.fixture
def run_dir(trained, tmp_path):
    import shutil

    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


def _edit_card(run_dir, change) -> None:
    path = run_dir / "card.json"
    card = json.loads(path.read_text())
    change(card)
    path.write_text(json.dumps(card))


# 10 -- damaged run folders ----------------------------------------------------------


@pytest.mark.parametrize(
    "change, resume_message, evaluate_message",
    [
        (lambda c: c.pop("run_config"), "has no 'run_config'", None),
        (lambda c: c.update(run_config="x"), "not a mapping", "not a mapping"),
        (lambda c: c.update(run_config={"data": 3}), "'data' is not a mapping", None),
        (lambda c: c["base_model"].pop("source"), "no valid 'source'", "no valid"),
        (lambda c: c["base_model"].update(size=3), "unknown entry 'size'", "unknown"),
    ],
    ids=["no-run-config", "string", "data-string", "missing-key", "extra-key"],
)
def test_damaged_cards_are_one_sentence(
    run_dir, capsys, change, resume_message, evaluate_message
):
    _edit_card(run_dir, change)
    before = snapshot(run_dir)
    assert main(["train", "--out", str(run_dir), "--resume", "--iterations", "4"]) == 2
    assert resume_message in one_sentence(capsys)
    assert main(["train", "--dataset", "organoids", "--out", str(run_dir.parent / "new"),
                 "--init-from", str(run_dir)]) == 2  # fmt: skip
    assert resume_message in one_sentence(capsys)
    if evaluate_message:
        assert main([*EVALUATE, "--run", str(run_dir), "--metrics", "single box"]) == 2
        assert evaluate_message in one_sentence(capsys)
    assert snapshot(run_dir) == before
    assert not (run_dir.parent / "new").exists()


def test_a_state_of_another_rank_is_refused(run_dir, trained, capsys):
    (run_dir / "state.pt").write_bytes((trained / "rank4" / "state.pt").read_bytes())
    before = snapshot(run_dir)
    assert main(["train", "--out", str(run_dir), "--resume", "--iterations", "5"]) == 2
    assert "state.pt belongs to another run" in one_sentence(capsys)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--split-seed", "-1"], "split seed must be"),
        (["--val-fraction", "1.5"], "validation fraction must be"),
    ],
)
def test_impossible_split_settings(tmp_path, capsys, extra, message):
    assert train(tmp_path, "run", *extra) == 2
    assert message in one_sentence(capsys)
    assert not (tmp_path / "run").exists()


def test_an_adapter_as_a_base_checkpoint_is_refused(run_dir, tmp_path, capsys):
    adapter = run_dir / "adapter_best.pt"
    before = snapshot(run_dir)
    argv = ["train", "--dataset", "organoids", "--model", "vit_b", "--checkpoint",
            str(adapter), "--method", "lora", "--out", str(tmp_path / "vb")]  # fmt: skip
    assert main(argv) == 2
    assert "not the weights of a vit_b base model" in one_sentence(capsys)
    assert main([*EVALUATE, "--model", "tiny", "--checkpoint", str(adapter)]) == 2
    assert "not the weights of a tiny base model" in one_sentence(capsys)
    assert snapshot(run_dir) == before and not (tmp_path / "vb").exists()


# 9 -- a read-only folder on resume ------------------------------------------------


def test_a_read_only_run_folder_on_resume(run_dir, capsys, monkeypatch):
    from napari_peft_sam.core import runfolder

    def read_only(path, blocking):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(runfolder, "_flock", read_only)
    before = snapshot(run_dir)
    assert main(["train", "--out", str(run_dir), "--resume", "--iterations", "4"]) == 2
    assert "Read-only file system" in one_sentence(capsys)
    assert snapshot(run_dir) == before


# 11 -- inputs ---------------------------------------------------------------------


def _files(tmp_path, images, labels, suffix="tif"):
    import imageio.v3 as iio

    for kind, arrays in (("images", images), ("labels", labels)):
        (tmp_path / kind).mkdir()
        for k, array in enumerate(arrays):
            iio.imwrite(tmp_path / kind / f"a{k}.{suffix}", array)
    return ["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels")]


def _labels(objects: bool = True):
    labels = np.zeros((96, 96), np.uint8)
    if objects:
        labels[10:40, 10:40], labels[50:80, 40:70] = 1, 2
    return labels


def _image(k: int = 0):
    return (np.random.default_rng(k).random((96, 96)) * 255).astype(np.uint8)


@pytest.mark.parametrize(
    "images, labels, suffix, message",
    [
        ([_image(0), _image(1)], [np.stack([_labels() * 40] * 3, -1)] * 2, "png",
         "RGB (colour) image"),
        ([_image(0).astype(np.complex64) + 1j] * 2, [_labels()] * 2, "tif",
         "complex-valued pixels"),
        ([_image(k) for k in range(4)], [_labels(k == 0) for k in range(4)], "tif",
         "part of the split (1 of 4 images) holds no labelled objects"),
    ],
    ids=["rgb-labels", "complex", "empty-split"],
)  # fmt: skip
def test_bad_inputs_say_what_is_wrong(
    tmp_path, capsys, images, labels, suffix, message
):
    data = _files(tmp_path, images, labels, suffix)
    before = snapshot(tmp_path)
    argv = ["train", *data, *QUICK, "--val-fraction", "0.25"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = one_sentence(capsys)
    assert message in err and "3D volume" not in err
    assert snapshot(tmp_path) == before


def test_evaluate_refuses_what_it_cannot_apply(run_dir, capsys):
    before = snapshot(run_dir)
    base = [*EVALUATE, "--run", str(run_dir)]
    assert main([*base, "--image-size", "128"]) == 2
    assert "trained at 256 px" in one_sentence(capsys)
    assert main([*base, "--metrics", "ais"]) == 2
    assert "ais needs an instance-segmentation decoder" in one_sentence(capsys)
    assert main([*EVALUATE, "--model", "tiny", "--metrics", "single box,ais"]) == 2
    assert "--with-decoder" in one_sentence(capsys)
    assert snapshot(run_dir) == before
    assert main([*base, "--image-size", "256", "--metrics", "single box"]) == 0


def test_metrics_as_one_string_or_a_comma_list():
    from napari_peft_sam.core import catalog

    assert catalog.parse("single box") == ["single box"]
    assert catalog.parse("single box, ip") == ["single box", "ip"]
    assert catalog.parse(["ip", "single box"]) == ["ip", "single box"]


@pytest.mark.parametrize("kind", ["file-as-folder", "not-a-journal"])
def test_a_bad_storage_is_refused_before_training(tmp_path, capsys, kind):
    (tmp_path / "afile").write_text("a,b\n1,2\n")
    storage = tmp_path / ("afile/r.journal" if kind == "file-as-folder" else "afile")
    before = snapshot(tmp_path)
    assert train(tmp_path, "run", "--storage", str(storage)) == 2
    assert "results store" in one_sentence(capsys)
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_a_full_disk_when_recording_keeps_the_run_and_says_how(
    tmp_path, capsys, monkeypatch
):
    from napari_peft_sam.core import store

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "add_record", full)
    storage = tmp_path / "r.journal"
    assert train(tmp_path, "run", "--storage", str(storage)) == 2
    err = one_sentence(capsys)
    assert "No space left on device" in err and "--resume --storage" in err
    assert (tmp_path / "run" / "adapter_best.pt").is_file()


# 8 -- a stop during the evaluation; a killed run's card ------------------------------


def test_sigterm_during_the_evaluation_stops_it(tmp_path, capsys, monkeypatch):
    from napari_peft_sam import _progress
    from napari_peft_sam.core.runfolder import read_card

    shown = _progress.ProgressPrinter.show
    evaluated = []

    def show(self, event):
        if getattr(event, "kind", "") == "progress":
            evaluated.append(event)
            if len(evaluated) == 1:
                os.kill(os.getpid(), signal.SIGTERM)
        shown(self, event)

    monkeypatch.setattr(_progress.ProgressPrinter, "show", show)
    assert train(tmp_path, "run", "--evaluate") == 143
    assert "Resume with" in capsys.readouterr().err
    assert len(evaluated) == 1  # no image after the signal
    card = read_card(tmp_path / "run")
    assert card["status"] == "SIGTERM during the evaluation"
    assert "evaluations" not in card


def test_a_killed_runs_card_does_not_say_running(tmp_path):
    from napari_peft_sam.core.runfolder import read_card

    out = tmp_path / "run"
    command = [sys.executable, "-m", "napari_peft_sam.cli", "train", "--dataset",
               "organoids", *QUICK[:-8], "--iterations", "2000", "--n-objects", "2",
               "--sub-iterations", "1", "--val-interval", "2000", "--out", str(out)]  # fmt: skip
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            log = out / "events.jsonl"
            if log.exists() and log.read_text().count('"step"') >= 2:
                break
            time.sleep(0.2)
        assert read_card(out)["status"] == "running"  # its owner is alive
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
    on_disk = json.loads((out / "card.json").read_text())["status"]
    assert on_disk == "running" and read_card(out)["status"] == "killed"
