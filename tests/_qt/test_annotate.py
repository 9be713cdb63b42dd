"""The annotate-retrain loop, clicked through: commit, add, retrain, next image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from .conftest import wait_until

pytestmark = pytest.mark.qt


def image_folder(tmp_path: Path, n: int = 4) -> tuple[Path, list, list]:
    """``n`` organoid images as files (what 'Image folder…' points at)."""
    import tifffile

    from napari_peft_sam.core.sources import read_image, sample_data_root

    root, folder = sample_data_root() / "organoids", tmp_path / "to-annotate"
    folder.mkdir()
    images, labels = [], []
    for k in range(n):
        image = read_image(root / "images" / f"organoids_{k:02d}.tif")
        tifffile.imwrite(folder / f"organoids_{k:02d}.tif", image)
        images.append(image)
        labels.append(read_image(root / "labels" / f"organoids_{k:02d}.tif"))
    return folder, images, labels


def commit(viewer, qtbot, prompt, truth: np.ndarray, object_id: int, box: bool):
    """Prompt one true object (its centre, and its box if asked) and commit it."""
    ys, xs = np.nonzero(truth == object_id)
    viewer.layers["prompts"].add([[ys.mean(), xs.mean()]])
    if box:
        corners = [[ys.min(), xs.min()], [ys.max(), xs.max()]]
        viewer.layers["box prompts"].add_rectangles([corners])
    wait_until(
        qtbot,
        lambda: (
            viewer.layers["mask (model)"].data.any() and not any(prompt._busy.values())
        ),
        60,
    )  # every reply in: a late one would paint over the next object
    qtbot.mouseClick(prompt.commit_button, Qt.LeftButton)


def annotate_and_add(viewer, qtbot, widgets, truth, version: int) -> None:
    annotate, prompt = widgets["Annotate"], widgets["Prompt tester"]
    ids = np.unique(truth)[1:]
    commit(viewer, qtbot, prompt, truth, ids[0], box=True)  # 2 clicks
    commit(viewer, qtbot, prompt, truth, ids[1], box=False)  # 1 click
    assert [e["clicks"] for e in prompt.effort] == [2, 1]
    qtbot.mouseClick(annotate.add_button, Qt.LeftButton)
    wait_until(
        qtbot, lambda: (annotate.aset() or 0) and annotate.aset().version == version
    )


def retrain(qtbot, annotate) -> dict:
    qtbot.mouseClick(annotate.retrain_button, Qt.LeftButton)
    wait_until(qtbot, lambda: not annotate.running, 300)
    assert annotate.last_result is not None, annotate.status.text()
    assert annotate.last_result["status"] == "complete"
    return annotate.last_result


def test_two_rounds_commit_add_retrain_next(docked, qtbot, tmp_path):
    from napari_peft_sam._qt._image_steps import OPENED
    from napari_peft_sam._qt.effort_plot import EffortPlot
    from napari_peft_sam.core.checkpoints import read_card
    from napari_peft_sam.core.store import rows

    viewer, widgets = docked
    annotate, prompt = widgets["Annotate"], widgets["Prompt tester"]
    folder, images, truths = image_folder(tmp_path)
    widgets["Model and method"].model.setCurrentText("tiny")
    widgets["Train"].form.editors["iterations"].setValue(2)
    prompt.model.setCurrentText("tiny")
    annotate.set_name.setCurrentText("loop")
    annotate.held_out_every.setValue(2)  # the 2nd image is held out: a held-out mSA
    annotate.choose_folder(str(folder))
    try:
        # round 0: two images with the base model, then retrain
        for k, version in ((0, 1), (1, 2)):
            qtbot.mouseClick(annotate.next_button, Qt.LeftButton)
            assert np.array_equal(viewer.layers[OPENED].data, images[k])
            annotate_and_add(viewer, qtbot, widgets, truths[k], version)
        first = retrain(qtbot, annotate)
        named = {k: first["annotation"][k] for k in ("set", "version", "round")}
        assert named == {"set": "loop", "version": 2, "round": 1}
        qtbot.mouseClick(annotate.next_button, Qt.LeftButton)
        assert prompt.model.currentData() == first["run_dir"]  # the new model
        assert np.array_equal(viewer.layers[OPENED].data, images[2])
        assert not viewer.layers["committed objects"].data.any()

        # round 1: one more image with the new model, retrain from it
        annotate_and_add(viewer, qtbot, widgets, truths[2], 3)
        second = retrain(qtbot, annotate)
        card = read_card(second["run_dir"])["run_config"]
        assert card["init_from"] == first["run_dir"]  # a warm start
        assert card["data"]["annotation"] == "annotation set 'loop' v0003"
        qtbot.mouseClick(annotate.next_button, Qt.LeftButton)
        assert prompt.model.currentData() == second["run_dir"]
        assert np.array_equal(viewer.layers[OPENED].data, images[3])
    finally:
        if annotate.process is not None:
            annotate.process.kill()

    aset = annotate.aset()
    summary = aset.summary()
    assert (summary["images"], summary["held_out"], summary["round"]) == (3, 1, 2)
    assert [e["clicks"] for e in aset.manifest["images"][2]["effort"]] == [2, 1]
    recorded = [r for r in rows(docked[1]["Data"].session.storage) if r["annotation"]]
    assert sorted(r["annotation"]["version"] for r in recorded) == [2, 3]
    assert all(r["metrics"].get("single box") is not None for r in recorded)
    assert recorded[-1]["annotation"]["effort"]["clicks_per_object"] == 1.5
    plot = widgets["Results"].findChild(EffortPlot)
    wait_until(qtbot, lambda: len(plot.canvas.points) == 3, 10)
    # rounds 0 and 1 were annotated; models 1 and 2 have a held-out mSA
    points = plot.canvas.points
    assert [p["clicks_per_object"] for p in points] == [1.5, 1.5, None]
    assert points[0]["msa"] is None and None not in [p["msa"] for p in points[1:]]


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_set_is_said_and_never_added_to(
    make_napari_viewer, qtbot, home, monkeypatch, damage
):
    from napari_peft_sam._qt.annotate_widget import AnnotateWidget
    from napari_peft_sam.core.annotations import AnnotationSet, Item
    from tests.helpers import snapshot

    from .conftest import notifications

    labels = np.zeros((48, 40), np.int32)
    labels[4:20, 5:30] = 1
    image = np.random.default_rng(0).integers(0, 4000, (48, 40)).astype(np.uint16)
    aset = AnnotationSet.open(home, "cells")
    aset.add([Item(image, labels, "a.tif", True)])
    manifest = aset.folder / "manifest.json"
    if damage == "truncated":
        manifest.write_text(manifest.read_text()[:50])
    else:
        manifest.unlink()
    before = snapshot(aset.folder)
    viewer = make_napari_viewer()
    widget = AnnotateWidget(viewer)
    try:
        line = widget.set_name.lineEdit()
        line.clear()
        qtbot.keyClicks(line, "cells")  # choose the set by typing its name
        sentence = f"The annotation set's manifest {manifest} is damaged"
        assert widget.summary.text().startswith(sentence)
        assert "A new set" not in widget.summary.text()
        assert any(n.startswith(sentence) for n in notifications())
        # 'Add to set' with an image of the prompt tester: refused, the set unchanged
        other = (image + 1).astype(np.uint16)
        item = {"image": other, "labels": labels, "name": "b.tif", "complete": True,
                "effort": [], "model": "tiny", "source": "b.tif"}  # fmt: skip
        monkeypatch.setattr(widget, "item", lambda: item)
        shown = len(notifications())
        qtbot.mouseClick(widget.add_button, Qt.LeftButton)
        wait_until(qtbot, lambda: len(notifications()) > shown, 120)
        assert notifications()[-1].startswith(sentence)
        assert widget.status.text().startswith(sentence)
        assert snapshot(aset.folder) == before
    finally:
        widget.session.close()
