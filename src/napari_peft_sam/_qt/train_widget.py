"""Train: settings, Train/Stop, progress with ETA, live loss and validation curves.

Each run trains in its own child process (``core/service.py``) supervised by a
reader thread, so the Qt event loop stays free and a crash or an out-of-memory
error in training leaves napari running. Stop is cooperative: the run saves a
consistent checkpoint and ends.
"""

from __future__ import annotations

import time
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import UserError
from ._plots import CurvePlot
from ._service import ServiceClient
from ._session import notify_failure, session_for

PATCHES = ["model input", "128", "256", "512", "1024"]


def _eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class TrainWidget(QWidget):
    """Starts, follows and stops a fine-tuning run; finished runs are evaluated."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.session.providers["train"] = self
        self.process: ServiceClient | None = None
        self.job = None
        self.run_dir: str | None = None
        self.last_result: dict[str, Any] | None = None

        # values arrive with the catalog: TrainConfig's defaults, then the
        # quick settings of the chosen model
        self.lr = QLineEdit()
        self.lr.setToolTip("Learning rate of AdamW (micro-sam uses 1e-5).")
        self.iterations = QSpinBox(minimum=1, maximum=1_000_000)
        self.n_objects = QSpinBox(minimum=1, maximum=200)
        self.n_objects.setToolTip("Objects sampled per image and step (micro-sam: 25).")
        self.patch = QComboBox()
        self.patch.addItems(PATCHES)
        self.patch.setToolTip(
            "Training patch size in pixels, resized to the model input."
        )
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu"])
        self.with_decoder = QCheckBox("also train the AIS decoder (the ais metric)")
        self.val_interval = QSpinBox(minimum=1, maximum=100_000)
        self.val_interval.setToolTip("Validate every this many steps.")
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m steps")
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.loss_plot = CurvePlot("training loss")
        self.val_plot = CurvePlot("validation")

        form = QFormLayout()
        form.addRow("learning rate", self.lr)
        form.addRow("iterations", self.iterations)
        form.addRow("objects per image", self.n_objects)
        form.addRow("patch size", self.patch)
        form.addRow("device", self.device)
        form.addRow("validate every", self.val_interval)
        form.addRow("", self.with_decoder)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.val_plot)

        self.train_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.session.when_ready(self._populate)

    def _populate(self, catalog: dict) -> None:
        defaults = catalog["train_defaults"]
        self.n_objects.setValue(defaults["n_objects"])
        self.val_interval.setValue(defaults["val_interval"])
        for device in catalog["devices"]:
            if self.device.findText(device) < 0:
                self.device.addItem(device)
        model = self.session.providers.get("model")
        self.suggest(model.model.currentText() if model is not None else "")
        if model is not None:
            model.model.currentTextChanged.connect(self.suggest)

    def suggest(self, model_name: str) -> None:
        """Settings that suit the base model (quick ones for the CPU models)."""
        catalog = self.session.catalog
        quick = catalog["quick_settings"].get(model_name, catalog["train_defaults"])
        self.lr.setText(f"{quick['lr']:g}")
        self.iterations.setValue(quick["iterations"])

    # -- the config ------------------------------------------------------------------

    def train_settings(self, strict: bool = True) -> dict[str, Any]:
        """TrainConfig fields from the form (without ``lr`` if it is not a number
        and ``strict`` is off, so that TrainConfig's default applies)."""
        try:
            lr = {"lr": float(self.lr.text())}
        except ValueError:
            if strict:
                raise UserError(
                    f"The learning rate must be a number like 1e-4, got {self.lr.text()!r}."
                ) from None
            lr = {}
        patch = self.patch.currentText()
        return lr | {
            "iterations": self.iterations.value(),
            "n_objects": self.n_objects.value(),
            "patch_size": None if patch == PATCHES[0] else int(patch),
            "device": self.device.currentText(),
            "with_decoder": self.with_decoder.isChecked(),
            "val_interval": min(self.val_interval.value(), self.iterations.value()),
            "val_patches": 4,
            "checkpoint_interval": 25,
        }

    def run_request(self) -> dict[str, Any]:
        data = self.session.provider("data")
        model = self.session.provider("model")
        source = data.validated_request()
        config = {
            "data": data.data_spec(),
            "model": model.model_spec(),
            "method": model.method_config(),
            "train": self.train_settings(),
        }
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{config['method']['method']}-{config['model']['name']}"
        return {
            "config": config,
            "source": source,
            "run_dir": str(self.session.runs_dir / name),
            "storage": self.session.storage,
        }

    # -- running ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.finished

    def start(self) -> None:
        if self.running:
            return
        try:
            request = self.run_request()
        except UserError as error:
            notify_failure(str(error), True)
            return
        self.run_dir = request["run_dir"]
        self.model_name = request["config"]["model"]["name"]
        self.last_result = None
        self.loss_plot.clear()
        self.val_plot.clear()
        self.progress.setRange(0, request["config"]["train"]["iterations"])
        self.progress.setValue(0)
        self.status.setText("Starting the training process…")
        self._started = time.monotonic()
        self.process = ServiceClient("training process")
        self.job = self.process.call("train", **request)
        self.job.event.connect(self._on_event)
        self.job.done.connect(self._on_done)
        self.job.failed.connect(self._on_failed)
        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)

    def stop(self) -> None:
        """Finish after the current step; the checkpoint stays usable."""
        if self.running:
            self.job.stop()
            self.status.setText("Stopping after this step…")
            self.stop_button.setEnabled(False)

    def _on_event(self, event) -> None:
        kind = getattr(event, "kind", None)
        if kind == "step":
            self.progress.setValue(event.step)
            self.loss_plot.add("loss", event.step, event.loss)
            self.status.setText(
                f"step {event.step}/{event.total} · loss {event.loss:.4f} · "
                f"{event.it_per_s:.2f} it/s · ETA {_eta(event.eta_s)}"
            )
            self.session.speeds[self.model_name] = event.it_per_s
        elif kind == "validation":
            for name in ("val_point_loss", "val_box_loss"):
                if name in event.metrics:
                    self.val_plot.add(
                        name.removeprefix("val_"), event.step, event.metrics[name]
                    )
        elif kind == "progress":
            self.status.setText(
                f"evaluating on held-out images: {event.done}/{event.total}"
            )

    def _finish(self) -> None:
        self.train_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        if self.process is not None:
            self.process.close()

    def _on_done(self, result: dict) -> None:
        self.last_result = result
        self._finish()
        self.session.add_run(result["run_dir"])
        if result.get("stopped"):
            self.status.setText(
                f"Stopped at step {result['steps']}; checkpoint in {result['run_dir']}."
            )
            self.session.info(
                f"Training stopped; the checkpoint is in {result['run_dir']}."
            )
            return
        metrics = ", ".join(
            f"{k} {v:.3f}" for k, v in result["metrics"].items() if v is not None
        )
        self.status.setText(
            f"Done in {time.monotonic() - self._started:.0f} s. Held-out: {metrics}."
        )
        self.session.results_changed.emit()
        self.session.info(f"Training finished: {metrics}.")

    def _on_failed(self, message: str, user_error: bool) -> None:
        self._finish()
        self.status.setText(f"Failed: {message.splitlines()[0]}")
        notify_failure(message, user_error)
