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

    def save_file_name(parent, caption, directory, filters, *rest):
        asked.append((directory, filters, rest[-1]))
        return str(target), filters

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_file_name)
    try:
        dialog = export_dialog(viewer.window._qt_window, session, run)
        assert dialog.isVisible() and dialog.buttons["merged"].isChecked()
        qtbot.mouseClick(dialog.buttons["micro-sam"], Qt.LeftButton)
        qtbot.mouseClick(dialog.buttons["merged"], Qt.LeftButton)
        qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
        assert asked[0][0].endswith("tiny-lora_merged.pt") and "*.pt" in asked[0][1]
        assert asked[0][2] == QFileDialog.Option.DontConfirmOverwrite  # asked below
        written = tmp_path / "shared" / "tiny-lora.pt"
        wait_until(qtbot, lambda: dialog.result is not None, 120)
        assert (
            written.is_file() and (tmp_path / "shared" / "tiny-lora.pt.json").is_file()
        )
        message = next(n for n in notifications() if str(written) in n)
        assert "napari-peft-sam train --model tiny --checkpoint" in message
        assert not dialog.isVisible()

        # the formats a tiny run cannot take are greyed out, saying why
        dialog = export_dialog(viewer.window._qt_window, session, run)
        for fmt, words in (
            ("bioimageio", "describes only vit_b"),
            ("micro-sam", "micro-sam cannot rebuild a tiny model"),
        ):
            button = dialog.buttons[fmt]
            assert not button.isEnabled() and words in button.toolTip()
            qtbot.mouseClick(button, Qt.LeftButton)
            assert not button.isChecked()
        assert dialog.buttons["merged"].isChecked() and dialog.export_button.isEnabled()
        dialog.reject()
    finally:
        session.close()


def _snapshot(folder):
    from tests.helpers import snapshot

    return snapshot(folder)


@pytest.mark.parametrize("answer", ["No", "Yes"])
def test_an_existing_target_is_replaced_only_after_yes(
    make_napari_viewer, qtbot, home, tmp_path, monkeypatch, answer
):
    from qtpy.QtWidgets import QMessageBox

    from napari_peft_sam._qt._session import session_for
    from napari_peft_sam._qt.export_dialog import export_dialog
    from napari_peft_sam.core.export import export_run

    run = _tiny_run(tmp_path / "runs" / "tiny-lora")
    target = tmp_path / "shared" / "model.pt"
    target.parent.mkdir()
    export_run(run, "merged", target)  # an earlier export and its recipe
    target.write_bytes(b"mine")  # ... since replaced by a file of the user's
    before = _snapshot(tmp_path / "shared")
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a: (str(target), ""))
    viewer = make_napari_viewer()
    session = session_for(viewer)
    try:
        dialog = export_dialog(viewer.window._qt_window, session, run)
        qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
        box = dialog.confirm
        assert box is not None and box.isVisible()
        assert str(target) in box.text() and f"{target}.json" in box.text()
        assert box.defaultButton() is box.button(QMessageBox.StandardButton.No)
        button = getattr(QMessageBox.StandardButton, answer)
        qtbot.mouseClick(box.button(button), Qt.LeftButton)
        if answer == "No":
            assert dialog.job is None and "Nothing exported" in dialog.status.text()
            assert _snapshot(tmp_path / "shared") == before
        else:
            wait_until(qtbot, lambda: dialog.result is not None, 120)
            assert target.read_bytes() != b"mine"
        dialog.reject()
    finally:
        session.close()


def test_a_file_that_is_not_a_recipe_is_never_replaced(
    make_napari_viewer, qtbot, home, tmp_path, monkeypatch
):
    from qtpy.QtWidgets import QMessageBox

    from napari_peft_sam._qt._session import session_for
    from napari_peft_sam._qt.export_dialog import export_dialog

    run = _tiny_run(tmp_path / "runs" / "tiny-lora")
    target = tmp_path / "shared" / "model.pt"
    target.parent.mkdir()
    (tmp_path / "shared" / "model.pt.json").write_text('{"my": "settings"}')
    before = _snapshot(tmp_path / "shared")
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a: (str(target), ""))
    viewer = make_napari_viewer()
    session = session_for(viewer)
    try:
        dialog = export_dialog(viewer.window._qt_window, session, run)
        qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
        yes = dialog.confirm.button(QMessageBox.StandardButton.Yes)
        qtbot.mouseClick(yes, Qt.LeftButton)  # even a Yes does not replace it
        wait_until(qtbot, lambda: "is not an export's recipe" in dialog.status.text())
        assert any("is not an export's recipe" in n for n in notifications())
        assert dialog.result is None and dialog.export_button.isEnabled()
        assert _snapshot(tmp_path / "shared") == before
        dialog.reject()
    finally:
        session.close()
