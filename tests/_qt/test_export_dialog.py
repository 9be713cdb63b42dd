"""The export dialog: pick a format, click Export, find the file and how to open it."""

from __future__ import annotations

import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog

from .conftest import notifications, wait_until

pytestmark = pytest.mark.qt


def _tiny_run(run_dir):
    from napari_peft_sam.core.checkpoints import save_run
    from napari_peft_sam.core.methods import apply_method, make_config
    from napari_peft_sam.core.models import load_base_model

    sam, info = load_base_model("tiny")
    cfg = make_config("lora", {"rank": 2})
    save_run(run_dir, apply_method(sam, cfg), info, cfg)
    return run_dir


def test_export_writes_the_file_and_says_how_to_open_it(
    make_napari_viewer, qtbot, home, tmp_path, monkeypatch
):
    from napari_peft_sam._qt._session import session_for
    from napari_peft_sam._qt.export_dialog import export_dialog

    run = _tiny_run(tmp_path / "runs" / "tiny-lora")
    viewer = make_napari_viewer()
    session = session_for(viewer)
    target = tmp_path / "shared" / "tiny-lora"  # the dialog adds the ending
    asked = []

    def save_file_name(parent, caption, directory, filters):
        asked.append((directory, filters))
        return str(target), filters

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_file_name)
    try:
        dialog = export_dialog(viewer.window._qt_window, session, run)
        assert dialog.isVisible() and dialog.buttons["merged"].isChecked()
        qtbot.mouseClick(dialog.buttons["micro-sam"], Qt.LeftButton)
        qtbot.mouseClick(dialog.buttons["merged"], Qt.LeftButton)
        qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
        assert asked[0][0].endswith("tiny-lora_merged.pt") and "*.pt" in asked[0][1]
        written = tmp_path / "shared" / "tiny-lora.pt"
        wait_until(qtbot, lambda: dialog.result is not None, 120)
        assert (
            written.is_file() and (tmp_path / "shared" / "tiny-lora.pt.json").is_file()
        )
        message = next(n for n in notifications() if str(written) in n)
        assert "napari-peft-sam train --model tiny --checkpoint" in message
        assert not dialog.isVisible()

        # a format the run cannot take: one sentence, nothing written
        dialog = export_dialog(viewer.window._qt_window, session, run)
        qtbot.mouseClick(dialog.buttons["bioimageio"], Qt.LeftButton)
        qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
        wait_until(qtbot, lambda: "describes only vit_b" in dialog.status.text(), 60)
        assert dialog.isVisible() and dialog.export_button.isEnabled()
        assert not (tmp_path / "shared" / "tiny-lora.zip").exists()
        dialog.reject()
    finally:
        session.close()
