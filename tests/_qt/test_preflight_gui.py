"""The memory preflight in the GUI: the estimate against the memory free, and a
run that does not fit refused with a notification before any process starts."""

from __future__ import annotations

import pytest
from qtpy.QtCore import Qt

from .conftest import notifications, wait_until

pytestmark = pytest.mark.qt


def checked(widgets, free_mb: float | None = None) -> bool:
    """Whether the memory check has answered for the current choices."""
    from napari_peft_sam._qt.model_widget import run_key

    memory = widgets["Train"].memory
    report = memory.report
    if report is None or memory.key != run_key(memory.config()):
        return False
    return free_mb is None or report.get("available_mb") == free_mb


def test_estimate_shows_memory_for_the_cpu(docked, qtbot):
    _, widgets = docked
    widgets["Model and method"].model.setCurrentText("tiny")
    wait_until(qtbot, lambda: checked(widgets), 120)
    report = widgets["Train"].memory.report
    assert report["device"] == "cpu" and report["refusal"] is None
    assert report["estimate_mb"] > 500  # the process itself, torch included
    for label in (
        widgets["Model and method"].memory_label,
        widgets["Train"].memory_label,
    ):
        text = label.text()
        assert "Memory for training: ≈" in text and "GB free (CPU)" in text


def test_train_that_does_not_fit_is_refused(docked, qtbot, monkeypatch):
    from napari_peft_sam.core import budget

    viewer, widgets = docked
    monkeypatch.setattr(budget, "system_available_mb", lambda: 300.0)
    viewer.open_sample("napari-peft-sam", "nuclei")
    data = widgets["Data"]
    data.source.setCurrentText("napari layers")
    data.image_layer.setCurrentText("nuclei images")
    data.labels_layer.setCurrentText("nuclei labels")
    widgets["Model and method"].model.setCurrentText("tiny")
    wait_until(qtbot, lambda: checked(widgets, 300.0), 120)
    train = widgets["Train"]
    refusal = train.memory.report["refusal"]
    assert refusal.startswith("Training tiny at 256 px with")
    assert "of memory is free; use" in refusal
    assert "Does not fit" in train.memory_label.text()

    before = len(notifications())
    qtbot.mouseClick(train.train_button, Qt.LeftButton)
    assert notifications()[before:] == [refusal]  # one sentence, as the CLI's
    assert train.process is None and train.job is None  # nothing started
    assert train.train_button.isEnabled() and refusal in train.status.text()
    wait_until(qtbot, lambda: not train.memory.busy, 120)  # checked again
    assert train.memory.report["refusal"] == refusal
