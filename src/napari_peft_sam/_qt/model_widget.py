"""Model and method: base model, PEFT method and its hyperparameter form."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core import requests
from ..core.errors import UserError
from ._form import KnobForm
from ._session import session_for

CUSTOM = "custom checkpoint…"


def human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


class ModelWidget(QWidget):
    """Builds the ``model`` and ``method`` parts of a run config."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.descriptions: dict[str, dict] = {}
        self.form: KnobForm | None = None
        self.estimate: dict[str, Any] | None = None

        self.model = QComboBox()
        self.architecture = QComboBox()
        self.architecture.addItems(["vit_b", "vit_l", "vit_h"])
        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText("a SAM or micro-sam .pt/.pth file")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.custom = QWidget()
        row = QHBoxLayout(self.custom)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.architecture)
        row.addWidget(self.checkpoint)
        row.addWidget(browse)
        self.custom.setVisible(False)
        self.method = QComboBox()
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.form_box = QGroupBox("hyperparameters")
        self.form_layout = QVBoxLayout(self.form_box)
        self.counts = QLabel("Waiting for the model service…")
        self.counts.setWordWrap(True)

        form = QFormLayout()
        form.addRow("base model", self.model)
        form.addRow("", self.custom)
        form.addRow("PEFT method", self.method)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.form_box)
        layout.addWidget(self.counts)
        layout.addStretch()

        self._timer = QTimer(self, singleShot=True, interval=150)
        self._timer.timeout.connect(self._describe)
        self.session.choices.events.train.connect(lambda *_: self._timer.start())
        self.session.when_ready(self._populate)

    # -- catalog -----------------------------------------------------------------------

    def _populate(self, catalog: dict) -> None:
        if self.method.count():
            return
        self.descriptions = {d["method"]: d for d in catalog["methods"]}
        self.model.addItems([*catalog["models"], CUSTOM])
        self.model.setCurrentText("demo")
        self.method.addItems(list(self.descriptions))
        self.method.setCurrentText("lora")
        self._set_method(self.method.currentText())
        self.model.currentTextChanged.connect(self._model_changed)
        self.method.currentTextChanged.connect(self._set_method)
        self.checkpoint.textChanged.connect(self.refresh)
        self.architecture.currentTextChanged.connect(self.refresh)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "SAM checkpoint", "", "Checkpoints (*.pt *.pth)"
        )
        if path:
            self.checkpoint.setText(path)

    def _model_changed(self, name: str) -> None:
        self.custom.setVisible(name == CUSTOM)
        self.refresh()

    def _set_method(self, name: str) -> None:
        if not name:
            return
        if self.form is not None:
            self.form.setParent(None)
            self.form.deleteLater()
        description = self.descriptions[name]
        self.summary.setText(f"<b>{description['title']}</b>: {description['summary']}")
        self.form = KnobForm(description)
        self.form.changed.connect(self.refresh)
        self.form_layout.addWidget(self.form)
        self.refresh()

    # -- what other widgets ask ----------------------------------------------------------

    def model_spec(self) -> dict[str, Any]:
        name = self.model.currentText()
        if not name:
            raise UserError("The model list is still loading; try again in a moment.")
        if name == CUSTOM:
            path = self.checkpoint.text().strip()
            if not path:
                raise UserError("Choose a checkpoint file for the custom model.")
            return {"name": self.architecture.currentText(), "checkpoint": path}
        return {"name": name, "checkpoint": None}

    def method_config(self) -> dict[str, Any]:
        if self.form is None:
            raise UserError("The method list is still loading; try again in a moment.")
        return self.form.values()

    # -- live counts -------------------------------------------------------------------

    def refresh(self, *_) -> None:
        """Publish the choice, then (debounced) ask for counts and memory."""
        try:
            self.session.choices.model = self.model_spec()
            self.session.choices.method = self.method_config()
        except UserError as error:
            self.counts.setText(str(error))
            return
        self._timer.start()

    def _describe(self) -> None:
        choices = self.session.choices
        self.session.call(
            requests.DescribeModel(
                choices.model["name"], choices.method, choices.train
            ),
            on_done=self._show_counts,
            on_failed=lambda message, _user: self.counts.setText(
                f"<font color='#e06060'>{message}</font>"
            ),
        )

    def _show_counts(self, estimate: dict[str, Any]) -> None:
        self.estimate = estimate
        share = 100 * estimate["trainable"] / max(estimate["total"], 1)
        self.counts.setText(
            f"trainable parameters: <b>{human(estimate['trainable'])}</b> of "
            f"{human(estimate['total'])} ({share:.2f}%)<br>"
            f"GPU memory for training: ≈ <b>{estimate['memory_mb'] / 1024:.1f} GB</b> (estimate)"
        )
