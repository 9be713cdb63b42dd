"""Model and method: base model, PEFT method and its hyperparameter form."""

from __future__ import annotations

import json
import sys
import time
import weakref
from typing import Any

from qtpy.QtCore import QObject, QProcess, QTimer, Signal
from qtpy.QtWidgets import (
    QApplication,
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

from ..core import budget, requests
from ..core.errors import UserError
from ._form import KnobForm
from ._session import session_for
from ._wording import gui_sentence

CUSTOM = "custom checkpoint…"
FRESH_S = 60.0  # a memory check this recent may refuse a run before it starts
_CHECKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def run_key(config: dict[str, Any]) -> str:
    """What a memory check depends on: the model, the method, the settings."""
    parts = {k: config.get(k) for k in ("model", "method", "train")}
    return json.dumps(parts, sort_keys=True, default=str)


def memory_line(report: dict[str, Any] | None) -> str:
    """One line (HTML): the training estimate against the memory free."""
    if report is None:
        return "Memory for training: estimating…"
    if "error" in report:
        return f"Memory for training: not estimated ({report['error']})"
    where = "CPU" if report["device"] == "cpu" else "GPU"
    need, free = report["estimate_mb"] / 1024, report["available_mb"]
    text = f"Memory for training: ≈ <b>{need:.1f} GB</b>"
    if free is None:
        text += f" ({where}; free memory unknown)"
    else:
        text += f" of {free / 1024:.1f} GB free ({where})"
    if report["refusal"]:
        return (
            f"{text}<br><font color='#e06060'>Does not fit: "
            f"{gui_sentence(report['refusal'])}</font>"
        )
    if report["message"]:
        text += f" — memory saving '{report['level']}' will be turned on"
    return text


class MemoryCheck(QObject):
    """The preflight of the viewer's current choices (``budget.check``).

    Runs in a short child process, debounced, one at a time: the estimate
    builds the model on meta tensors, which needs torch and torchvision, and
    napari's process must not import torchvision. The memory free on the CPU
    is measured here (``budget.system_available_mb``) and passed along.
    """

    changed = Signal(object)  # the report

    def __init__(self, session) -> None:
        super().__init__(session)
        self.choices = session.choices  # no reference back: _CHECKS is weak
        self.report: dict[str, Any] | None = None
        self.key: str | None = None  # the choices the report is for
        self.at = 0.0
        self._process: QProcess | None = None
        self._again = False
        self._timer = QTimer(self, singleShot=True, interval=300)
        self._timer.timeout.connect(self.refresh)
        events = self.choices.events
        for signal in (events.model, events.method, events.train):
            signal.connect(lambda *_: self._timer.start())
        self._timer.start()
        QApplication.instance().aboutToQuit.connect(self.stop)

    def config(self) -> dict[str, Any]:
        choices = self.choices
        return {
            "model": dict(choices.model),
            "method": dict(choices.method),
            "train": dict(choices.train),
        }

    def refresh(self) -> None:
        """Check the current choices now (after the running check, if one is)."""
        if self._process is not None:
            self._again = True
            return
        config = self.config()
        free = budget.system_available_mb()
        process = QProcess(self)
        process.setProgram(sys.executable)
        process.setArguments(
            [
                "-m",
                "napari_peft_sam.core.budget",
                json.dumps(config, default=str),
                "none" if free is None else f"{free:.0f}",
            ]
        )
        key = run_key(config)
        process.finished.connect(lambda *_: self._finished(process, key))
        self._process = process
        process.start()

    @property
    def busy(self) -> bool:
        """Whether a check is running."""
        return self._process is not None

    def _finished(self, process: QProcess, key: str) -> None:
        try:
            out = bytes(process.readAllStandardOutput()).decode(errors="replace")
            code = process.exitCode()
        except RuntimeError:  # killed as the viewer closed: nobody is waiting
            return
        lines = out.strip().splitlines()
        try:
            report = json.loads(lines[-1])
        except (IndexError, ValueError):
            report = {"error": f"the check ended with exit code {code}"}
        process.deleteLater()
        self._process = None
        self.report, self.key, self.at = report, key, time.monotonic()
        self.changed.emit(report)
        if self._again:
            self._again = False
            self.refresh()

    def refusal(self, config: dict[str, Any]) -> str | None:
        """The preflight's sentence when a recent check of ``config`` found it
        does not fit; None otherwise (the run's own preflight then decides)."""
        fresh = time.monotonic() - self.at < FRESH_S
        if self.report is None or self.key != run_key(config) or not fresh:
            return None
        return self.report.get("refusal")

    def stop(self) -> None:
        """End a running check (the viewer closes)."""
        process, self._process, self._again = self._process, None, False
        if process is not None:
            process.finished.disconnect()
            process.kill()
            process.waitForFinished(2000)


def memory_check_for(session) -> MemoryCheck:
    """The memory check of ``session`` (one per viewer, shared by the widgets)."""
    if session not in _CHECKS:
        _CHECKS[session] = MemoryCheck(session)
    return _CHECKS[session]


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
        self.memory = memory_check_for(self.session)
        self.memory_label = QLabel(memory_line(self.memory.report))
        self.memory_label.setWordWrap(True)
        # a bound method: Qt drops the connection when this widget is deleted
        self.memory.changed.connect(self._show_memory)

        form = QFormLayout()
        form.addRow("base model", self.model)
        form.addRow("", self.custom)
        form.addRow("PEFT method", self.method)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.form_box)
        layout.addWidget(self.counts)
        layout.addWidget(self.memory_label)
        layout.addStretch()

        self._timer = QTimer(self, singleShot=True, interval=150)
        self._timer.timeout.connect(self._describe)
        self.session.choices.events.train.connect(lambda *_: self._timer.start())
        self.session.when_ready(self._populate)

    # -- catalog -----------------------------------------------------------------------

    def _show_memory(self, report) -> None:
        self.memory_label.setText(memory_line(report))

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
        self.form = KnobForm(description["hyperparameters"])
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
        return {"method": self.method.currentText()} | self.form.values()

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
            f"{human(estimate['total'])} ({share:.2f}%)"
        )
