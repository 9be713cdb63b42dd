"""Issue 28: the window fits 1080p, one job manager, runs first-class, the
comparison view and one spelling per value; clicked as a user would."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_peft_sam._qt._layout import dock_names
from napari_peft_sam.core.catalog import PRIMARY

from .conftest import notifications, wait_until
from .test_widgets import choose, use_sample

pytestmark = pytest.mark.qt


def test_window_fits_a_1080p_screen_and_the_menu_docks_no_copy(docked):
    viewer, widgets = docked
    window = viewer.window._qt_window
    hint = window.minimumSizeHint()
    assert hint.width() <= 1920 and hint.height() <= 1000, (hint.width(), hint.height())
    docks = dict(viewer.window._wrapped_dock_widgets)
    # what a job asking for a dock does: the docked one is raised, no copy
    assert widgets["Train"].session.dock("Train") is widgets["Train"]
    assert dict(viewer.window._wrapped_dock_widgets) == docks
    bottom = Qt.BottomDockWidgetArea
    assert window.dockWidgetArea(docks[dock_names("Results")[0]]) == bottom
    assert window.corner(Qt.BottomLeftCorner) == bottom  # Results: full width


def test_sign_change_after_clear_and_commit_does_not_raise(docked, qtbot):
    viewer, widgets = docked
    viewer.open_sample("napari-peft-sam", "nuclei")
    prompt = widgets["Prompt tester"]
    prompt.image.setCurrentText("nuclei images")
    qtbot.mouseClick(prompt.start_button, Qt.LeftButton)
    points = viewer.layers["prompts"]
    for button in (prompt.clear_button, prompt.commit_button):
        points.add([[10.0, 10.0]])
        points.selected_data = {len(points.data) - 1}  # as a click on the canvas
        qtbot.mouseClick(button, Qt.LeftButton)
        assert len(points.data) == 0 and points.selected_data == set()
        prompt.negative.click()  # was: index 0 is out of bounds
        prompt.positive.click()
    points.add([[12.0, 12.0]])
    assert list(points.features["positive"]) == [True]


def test_second_training_is_refused_and_stop_survives_closing_the_dock(docked, qtbot):
    viewer, widgets = docked
    use_sample(viewer, widgets)
    choose(widgets, iterations=5000)
    train, sweep = widgets["Train"], widgets["Sweep"]
    qtbot.mouseClick(train.train_button, Qt.LeftButton)
    wait_until(qtbot, lambda: train.progress.value() >= 2, 120)
    jobs = train.session.jobs
    assert len(jobs.running()) == 1
    # a second training-type job from another dock: refused with a sentence
    sweep.preset.setCurrentText("custom (from Data and Model)")
    qtbot.mouseClick(sweep.start_button, Qt.LeftButton)
    assert len(jobs.jobs) == 1 and sweep.run is None
    assert any("is still running" in n for n in notifications())
    # close the Train dock with its title bar's close button
    dock = viewer.window._wrapped_dock_widgets[dock_names("Train")[0]]
    qtbot.mouseClick(dock.title.close_button, Qt.LeftButton)
    assert dock_names("Train")[0] not in viewer.window._wrapped_dock_widgets
    listing = train.session.dock("Jobs")
    job, bar, stop = listing.rows[0]
    assert job.title.startswith("Train ") and job.running
    qtbot.mouseClick(stop, Qt.LeftButton)
    wait_until(qtbot, lambda: not job.running, 120)
    assert job.state == "stopped" and job.result["status"] == "stopped"
    assert 2 <= job.result["iterations"] < 5000
    assert not stop.isEnabled()


def test_every_run_under_home_is_a_model_with_its_score(docked, qtbot, home):
    viewer, widgets = docked
    run = home / "runs" / "20260101-000000-lora-tiny"
    run.mkdir(parents=True)
    card = {
        "format": "napari-peft-sam/run-card",
        "status": "stopped",
        "base_model": {"name": "tiny"},
        "method": {"method": "lora"},
        "metrics": {PRIMARY: 0.4567},
        "created": "2026-01-01T00:00:00",
    }
    (run / "card.json").write_text(json.dumps(card))
    (home / "runs" / "broken").mkdir()
    (home / "runs" / "broken" / "card.json").write_text("{not json")
    prompt = widgets["Prompt tester"]
    prompt.session.models_changed.emit()  # what a finished run announces
    texts = [prompt.model.itemText(i) for i in range(prompt.model.count())]
    label = next(t for t in texts if t.startswith("run: 20260101"))
    assert "stopped" in label and "0.457" in label
    assert not any("broken" in t for t in texts)


def test_compare_outline_legend_own_colours_and_undo(docked, qtbot):
    viewer, widgets = docked
    viewer.open_sample("napari-peft-sam", "nuclei")
    prompt = widgets["Prompt tester"]
    prompt.image.setCurrentText("nuclei images")
    qtbot.mouseClick(prompt.start_button, Qt.LeftButton)
    prompt.compare.click()
    assert prompt.legend.isVisibleTo(prompt) and "outline" in prompt.legend.text()
    assert viewer.layers["mask (base model)"].contour > 0
    assert viewer.layers["mask (model)"].contour == 0
    mask = viewer.layers["mask (model)"]
    for corner in ((slice(0, 5), slice(0, 5)), (slice(10, 15), slice(10, 15))):
        data = np.zeros(mask.data.shape, np.int32)
        data[corner] = 1
        mask.data = data
        prompt._first_click = None
        qtbot.mouseClick(prompt.commit_button, Qt.LeftButton)
    committed = viewer.layers["committed objects"]
    assert committed.data.max() == 2
    # committed objects are coloured by napari's label colours, not the masks'
    model_colour = mask.colormap.map(np.array([1]))[0]
    assert not np.allclose(committed.colormap.map(np.array([1]))[0], model_colour)
    assert len(prompt.session.prompt.effort) == 2
    qtbot.mouseClick(prompt.undo_button, Qt.LeftButton)
    assert committed.data.max() == 1 and committed.data[12, 12] == 0
    assert len(prompt.session.prompt.effort) == 1  # Annotate follows this
    assert "1 objects" in widgets["Annotate"].effort.text()


def test_sweep_follows_train_edits_and_measures_its_speed(docked, qtbot):
    viewer, widgets = docked
    use_sample(viewer, widgets)
    widgets["Model and method"].model.setCurrentText("tiny")
    sweep = widgets["Sweep"]
    sweep.preset.setCurrentText("custom (from Data and Model)")
    before = sweep.build_spec()
    assert before["name"].startswith("gui-lora-tiny-")
    widgets["Train"].form.editors["iterations"].setValue(7)
    after = sweep.build_spec()
    assert after["grid"]["iterations"] == [7]
    assert after["name"] != before["name"]
    assert "typical CPU" not in sweep.estimate.text()
    assert "measured here" in sweep.estimate.text()  # nothing measured yet
    sweep.session.measured("tiny", "run-a", 2.0)
    assert "measured by 1 run of tiny here" in sweep.estimate.text()
    if "targets" in after["grid"]:
        assert all(isinstance(v, str) for v in after["grid"]["targets"])  # 'q+v'
