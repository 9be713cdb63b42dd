"""Issue 28 items 4 and 6 in the Results panel, clicked as a user would: a
trained run reads 'before → after' (its base model on the same held-out
images, evaluated once), and the Markdown export shows no None and no Python
list."""

from __future__ import annotations

import json
import re

import pytest
from qtpy.QtCore import Qt

from napari_peft_sam.core.catalog import PRIMARY

from .conftest import wait_until
from .test_widgets import choose, use_sample

pytestmark = pytest.mark.qt


def test_a_trained_run_shows_before_and_after_and_exports_clean_markdown(
    docked, qtbot, home, tmp_path, monkeypatch
):
    from napari_peft_sam._qt import results_widget

    viewer, widgets = docked
    use_sample(viewer, widgets)
    choose(widgets)
    train, results = widgets["Train"], widgets["Results"]
    qtbot.mouseClick(train.train_button, Qt.LeftButton)
    wait_until(qtbot, lambda: train.last_result is not None, 600)
    wait_until(qtbot, lambda: results.table.rowCount() == 1, 60)
    headers = [
        results.table.horizontalHeaderItem(j).text()
        for j in range(results.table.columnCount())
    ]
    column = headers.index(PRIMARY)
    wait_until(qtbot, lambda: "→" in results.table.item(0, column).text(), 300)
    cell = results.table.item(0, column)
    (cached,) = (home / "baselines").glob("*.json")
    base = json.loads(cached.read_text())["metrics"][PRIMARY]
    after = train.last_result["metrics"][PRIMARY]
    assert cell.text() == f"{base:.3f} → {after:.3f}"
    assert "base model" in results.status.text() and "base model" in cell.toolTip()
    trainable = results.table.item(0, headers.index("trainable")).text()
    assert "," in trainable and trainable.replace(",", "").isdigit()  # 258,632
    took = results.table.item(0, headers.index("time")).text()
    assert re.fullmatch(r"\d+ s|\d+:\d\d", took), took  # 12 s or 4:27

    # Refresh: the base model is not evaluated again (the same cached file)
    stamp = cached.stat().st_mtime_ns
    qtbot.mouseClick(results.refresh_button, Qt.LeftButton)
    wait_until(qtbot, lambda: results.status.text().startswith("1 of 1"), 60)
    assert results.table.item(0, column).text() == f"{base:.3f} → {after:.3f}"
    assert cached.stat().st_mtime_ns == stamp
    assert list((home / "baselines").glob("*.json")) == [cached]

    out = tmp_path / "results.md"
    monkeypatch.setattr(
        results_widget.QFileDialog,
        "getSaveFileName",
        staticmethod(lambda *a, **k: (str(out), "")),
    )
    qtbot.mouseClick(results.md_button, Qt.LeftButton)
    wait_until(qtbot, out.exists, 60)
    text = out.read_text()
    assert "None" not in text and "[" not in text and "'" not in text, text
    assert "q+v" in text  # LoRA's targets in their one spelling
