"""Train: settings, Train/Stop, progress with ETA, live loss and validation curves.

Each run trains in its own child process (``core/service.py``) supervised by a
reader thread, so the Qt event loop stays free and a crash or an out-of-memory
error in training leaves napari running. Stop is cooperative: the run saves a
consistent checkpoint and ends.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core import requests
from ..core.display import duration
from ..core.errors import UserError
from ._form import KnobForm
from ._plots import CurvePlot
from ._session import notify_failure, session_for
from ._wording import gui_sentence
from .data_widget import data_spec, source_request
from .model_widget import memory_check_for, memory_line
from .run_controller import RunOwner


class TrainWidget(RunOwner, QWidget):
    """Starts, follows and stops a fine-tuning run; finished runs are evaluated."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.run_dir: str | None = None
        self.last_result: dict[str, Any] | None = None
        # every training setting, from TrainConfig.describe(): the chosen model's
        # recipe; a field the user edits (bold) overrides it, also after a model change
        self.form: KnobForm | None = None

        self.recipe = QLabel("Waiting for the model service…")
        self.recipe.setWordWrap(True)
        self.reset_button = QPushButton("Reset to the model's recipe")
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip(
            "Export the last run for micro-sam, its annotator or bioimage.io."
        )
        self.export_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m steps")
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.memory = memory_check_for(self.session)
        self.memory_label = QLabel(memory_line(self.memory.report))
        self.memory_label.setWordWrap(True)
        # a bound method: Qt drops the connection when this widget is deleted
        self.memory.changed.connect(self._show_memory)
        self.loss_plot = CurvePlot("training loss")
        self.val_plot = CurvePlot("validation")

        self.form_box = QVBoxLayout()
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.export_button)
        # settings beside progress and curves: the dock fits a 1080p screen
        settings, follow = QVBoxLayout(), QVBoxLayout()
        settings.addWidget(self.recipe)
        settings.addLayout(self.form_box)
        settings.addWidget(self.reset_button)
        settings.addWidget(self.memory_label)
        settings.addStretch()
        follow.addLayout(buttons)
        follow.addWidget(self.progress)
        follow.addWidget(self.status)
        follow.addWidget(self.loss_plot, 1)
        follow.addWidget(self.val_plot, 1)
        layout = QHBoxLayout(self)
        layout.addLayout(settings, 1)
        layout.addLayout(follow, 1)

        self.train_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.export_button.clicked.connect(self.export)
        self.session.when_ready(self._populate)

    def _show_memory(self, report) -> None:
        self.memory_label.setText(memory_line(report))

    def _populate(self, catalog: dict) -> None:
        if self.form is not None:
            return
        self.form = KnobForm(catalog["train_settings"], mark_edits=True)
        self.form.changed.connect(self._publish)
        self.form_box.addWidget(self.form)
        self.reset_button.clicked.connect(self.form.reset)
        self.reset_button.clicked.connect(lambda *_: self._show_recipe())
        self.session.choices.events.model.connect(lambda *_: self._show_recipe())
        self._show_recipe()

    def _show_recipe(self) -> None:
        """Show the chosen model's recipe in every field the user has not set."""
        catalog = self.session.catalog
        model = self.session.choices.model["name"]
        recipe = catalog["recipes"].get(model) or catalog["recipes"][model[:5]]
        defaults = {s["name"]: s["default"] for s in catalog["train_settings"]}
        self.form.show_values(defaults | recipe["settings"])
        self.recipe.setText(
            f"Settings of the <b>{recipe['name']}</b> recipe for {model}; "
            "fields you change (bold) override it."
        )

    def _publish(self) -> None:
        self.session.choices.train = self.form.explicit()

    # -- the request -----------------------------------------------------------------

    def run_request(self) -> requests.Train:
        choices = self.session.choices
        if choices.data is None:
            self.session.dock("Data")
        source = source_request(self.viewer, choices.data)
        if source["kind"] == "arrays":
            from .data_widget import check_arrays

            check_arrays(source, choices.data.val_fraction)  # instant, numpy only
        config = {
            "data": data_spec(choices.data),
            "model": dict(choices.model),
            "method": dict(choices.method),
            "train": dict(choices.train),
        }
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{config['method']['method']}-{config['model']['name']}"
        return requests.Train(
            config=config,
            source=source,
            run_dir=str(self.session.runs_dir / name),
            storage=self.session.storage,
        )

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        try:
            request = self.run_request()
        except UserError as error:
            notify_failure(gui_sentence(str(error)), True)
            return
        refusal = self.memory.refusal(request.config)
        if refusal is not None:  # the run's own preflight would refuse it too
            refusal = gui_sentence(refusal)
            self.status.setText(f"Not started: {refusal}")
            notify_failure(refusal, True)
            self.memory.refresh()  # memory may have been freed since
            return
        run = self.start_job(f"Train {Path(request.run_dir).name}", request)
        if run is None:  # another training-type job runs: the manager said so
            self.status.setText("Not started: another training is running.")
            return
        self.run_dir = request.run_dir
        self.model_name = request.config["model"]["name"]
        self.last_result = None
        self.loss_plot.clear()
        self.val_plot.clear()
        self.progress.setRange(0, 0)  # until the first step says how many
        self.progress.setValue(0)
        self.status.setText("Starting the training process…")
        self._started = time.monotonic()
        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)

    def stop(self) -> None:
        """Finish after the current step; the checkpoint stays usable."""
        if self.running:
            self.run.stop()
            self.status.setText("Stopping after this step…")
            self.stop_button.setEnabled(False)

    def _on_event(self, event) -> None:
        kind = getattr(event, "kind", None)
        if kind == "step":
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.step)
            self.loss_plot.add("loss", event.step, event.loss)
            self.status.setText(
                f"step {event.step}/{event.total} · loss {event.loss:.4f} · "
                f"{event.it_per_s:.2f} it/s · ETA {duration(event.eta_s)}"
            )
            self.session.measured(self.model_name, self.run_dir, event.it_per_s)
        elif kind == "validation":
            for name in ("val_point_loss", "val_box_loss"):
                if name in event.metrics:
                    self.val_plot.add(
                        name.removeprefix("val_"), event.step, event.metrics[name]
                    )
        elif kind == "progress" and event.done == 0:  # the memory check's message
            self.status.setText(event.message)
        elif kind == "progress":
            self.status.setText(
                f"evaluating on held-out images: {event.done}/{event.total}"
            )

    def _finish(self) -> None:
        self.train_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    def export(self):
        """The export dialog for the last run."""
        from .export_dialog import export_dialog

        if self.last_result is None:
            return None
        return export_dialog(self, self.session, self.last_result["run_dir"])

    def _on_done(self, result: dict) -> None:
        self.last_result = result
        self._finish()
        self.export_button.setEnabled(True)
        self.session.add_run(result["run_dir"])
        if result["status"] == "stopped":
            self.status.setText(
                f"Stopped at step {result['iterations']}; checkpoint in "
                f"{result['run_dir']}."
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
        message = gui_sentence(message) if user_error else message
        self.status.setText(f"Failed: {message.splitlines()[0]}")
        notify_failure(message, user_error)
