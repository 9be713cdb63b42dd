"""Export a run from the GUI: micro-sam, micro-sam's annotator, or bioimage.io.

The export runs in the model service (``core.export.export_run``); when it is
done a notification names the file and says how to open it. A format the run
cannot take is greyed out with the reason as its tooltip; a file that exists
(the checkpoint or its recipe beside it) is replaced only after a Yes.
"""

from __future__ import annotations

import os
from pathlib import Path

from qtpy.QtWidgets import (
    QButtonGroup,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
)

from ..core import requests
from ..core.errors import UserError
from ..core.export import (  # torch-free: the formats and what rules one out
    FORMATS,
    format_problem,
    recipe_path,
)
from ..core.runfolder import read_card
from ._session import notify_failure

TITLES = {
    "micro-sam": "micro-sam PEFT checkpoint",
    "merged": "micro-sam annotator (merged weights)",
    "bioimageio": "bioimage.io package",
}
TARGETS = {  # default file name ending, file-dialog filter
    "micro-sam": ("_micro-sam.pt", "PyTorch checkpoint (*.pt)"),
    "merged": ("_merged.pt", "PyTorch checkpoint (*.pt)"),
    "bioimageio": ("_bioimageio.zip", "bioimage.io package (*.zip)"),
}


class ExportDialog(QDialog):
    """Pick a format, then a target file; the export runs in the model service."""

    def __init__(self, parent, session, run_dir: str | os.PathLike) -> None:
        super().__init__(parent)
        self.session, self.run_dir = session, Path(run_dir)
        self.job = self.confirm = None
        self.result: dict | None = None
        self.setWindowTitle(f"Export {self.run_dir.name}")
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        layout = QVBoxLayout(self)
        for fmt, explanation in FORMATS.items():
            button = QRadioButton(TITLES[fmt])
            button.setToolTip(explanation)
            self.group.addButton(button)
            self.buttons[fmt] = button
            note = QLabel(explanation)
            note.setWordWrap(True)
            note.setContentsMargins(22, 0, 0, 6)
            layout.addWidget(button)
            layout.addWidget(note)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.export_button = QPushButton("Export…")
        self._rule_out_formats()
        self.cancel_button = QPushButton("Close")
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.cancel_button)
        row.addWidget(self.export_button)
        layout.addWidget(self.status)
        layout.addLayout(row)
        self.export_button.clicked.connect(self.choose_target)
        self.cancel_button.clicked.connect(self.reject)

    def _rule_out_formats(self) -> None:
        """Grey out each format the run cannot take, with the reason as tooltip."""
        try:
            card = read_card(self.run_dir)
            problems = {fmt: format_problem(fmt, card) for fmt in self.buttons}
        except UserError as error:  # a damaged run: nothing to export
            problems = dict.fromkeys(self.buttons, str(error))
        for fmt, problem in problems.items():
            if problem:
                self.buttons[fmt].setEnabled(False)
                self.buttons[fmt].setToolTip(problem)
        usable = [f for f in ("merged", *self.buttons) if not problems[f]]
        if usable:
            self.buttons[usable[0]].setChecked(True)
        else:
            self.export_button.setEnabled(False)
            self.status.setText(next(iter(problems.values())))

    def selected(self) -> str:
        return next(f for f, b in self.buttons.items() if b.isChecked())

    def choose_target(self) -> None:
        """Ask where to write; ``start`` asks before replacing anything."""
        fmt = self.selected()
        ending, filters = TARGETS[fmt]
        default = self.run_dir.parent / f"{self.run_dir.name}{ending}"
        path, _ = QFileDialog.getSaveFileName(
            self,
            f"Export as {TITLES[fmt]}",
            str(default),
            filters,
            "",
            # asked once in start, for the file and the recipe beside it
            QFileDialog.Option.DontConfirmOverwrite,
        )
        if path:
            suffix = Path(ending).suffix
            self.start(path if path.endswith(suffix) else path + suffix)

    def start(self, path: str) -> None:
        """Export to ``path``; if it (or its recipe) exists, ask first."""
        targets = [Path(path)]
        if self.selected() != "bioimageio":
            targets.append(recipe_path(Path(path)))
        existing = [str(p) for p in targets if p.exists()]
        if not existing:
            return self._export(path, overwrite=False)
        self.confirm = QMessageBox(
            QMessageBox.Icon.Warning,
            "Replace?",
            f"{' and '.join(existing)} already exist{'s' * (len(existing) == 1)}. "
            "Replace with this export?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        self.confirm.setDefaultButton(QMessageBox.StandardButton.No)
        self.confirm.buttonClicked.connect(lambda button: self._answered(button, path))
        self.confirm.open()
        return None

    def _answered(self, button, path: str) -> None:
        yes = self.confirm.standardButton(button) == QMessageBox.StandardButton.Yes
        self.confirm = None
        if yes:
            self._export(path, overwrite=True)
        else:
            self.status.setText("Nothing exported; choose another name.")

    def _export(self, path: str, overwrite: bool) -> None:
        fmt = self.selected()
        wait = " (a few minutes on a CPU)" if fmt == "bioimageio" else ""
        self.status.setText(f"Exporting to {path}{wait}…")
        self.export_button.setEnabled(False)
        self.job = self.session.call(
            requests.Export(str(self.run_dir), fmt, path, overwrite=overwrite),
            on_done=self._done,
            on_failed=self._failed,
        )

    def _done(self, recipe: dict) -> None:
        self.result = recipe
        self.status.setText(f"Wrote {recipe['path']}.")
        self.export_button.setEnabled(True)
        self.session.info(f"Wrote {recipe['path']}. {recipe['how_to_open']}")
        self.accept()

    def _failed(self, message: str, user_error: bool) -> None:
        self.status.setText(message.splitlines()[0])
        self.export_button.setEnabled(True)
        notify_failure(message, user_error)


def export_dialog(parent, session, run_dir: str | os.PathLike) -> ExportDialog:
    """Open the export dialog for ``run_dir`` (window-modal, returns at once).

    Parameters
    ----------
    parent
        The widget the dialog belongs to (a dock widget or napari's window).
    session
        The viewer's :class:`~napari_peft_sam._qt._session.Session`.
    run_dir
        The run folder to export.
    """
    dialog = ExportDialog(parent, session, run_dir)
    dialog.open()
    return dialog
