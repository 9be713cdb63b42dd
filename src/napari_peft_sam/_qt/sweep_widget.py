"""Sweep: a preset or value lists per hyperparameter, run here, locally or on SLURM."""

from __future__ import annotations

import math
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core import catalog, requests
from ..core.display import number
from ..core.errors import UserError
from ..core.executors import EXECUTORS
from ..core.recipes import recipe_for, resolve
from ._session import notify_failure, session_for
from ._sweep_parts import (
    SlurmOptions,
    TrialTable,
    canonical,
    parse_values,
    spec_name,
    values_text,
)
from ._wording import gui_sentence
from .data_widget import sweep_data
from .run_controller import RunOwner

CUSTOM = "custom (from Data and Model)"


class SweepWidget(RunOwner, QWidget):
    """Builds a sweep spec, shows its size and cost, runs it and follows each trial."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.spec: dict[str, Any] | None = None

        self.preset = QComboBox()
        self.grid = QTableWidget(0, 2)
        self.grid.setHorizontalHeaderLabels(
            ["hyperparameter", "values (comma-separated)"]
        )
        self.grid.horizontalHeader().setStretchLastSection(True)
        self.grid.verticalHeader().setVisible(False)
        self.grid.setMinimumHeight(100)
        self.fill_button = QPushButton("Fill from Model and Train")
        self.seeds = QSpinBox(minimum=1, maximum=20, value=1)
        self.seeds.setToolTip(
            "Training seeds per grid point: with 2 or more the tables show means and "
            "95 % confidence intervals, and which points are indistinguishable from the best."
        )
        self.estimate = QLabel()
        self.estimate.setWordWrap(True)
        self.executor = QComboBox()
        for executor in EXECUTORS.values():
            self.executor.addItem(executor.title, executor.name)
        self.workers = QSpinBox(minimum=1, maximum=256, value=2)
        self.slurm = SlurmOptions()
        self.start_button, self.stop_button = QPushButton("Start"), QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        self.stop_button.setEnabled(False)
        self.progress = TrialTable()
        self.status = QLabel()
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("preset", self.preset)
        seeds = QFormLayout()
        seeds.addRow("seeds per point", self.seeds)
        run = QFormLayout()
        run.addRow("run on", self.executor)
        run.addRow("workers", self.workers)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.stop_button, self.resume_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.grid)
        layout.addWidget(self.fill_button)
        layout.addLayout(seeds)
        layout.addWidget(self.estimate)
        layout.addLayout(run)
        layout.addWidget(self.slurm)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

        self.preset.currentTextChanged.connect(self._preset_changed)
        self.grid.itemChanged.connect(lambda *_: self.update_estimate())
        self.seeds.valueChanged.connect(lambda *_: self.update_estimate())
        self.fill_button.clicked.connect(self.fill_custom)
        self.executor.currentTextChanged.connect(self._executor_changed)
        self.workers.valueChanged.connect(lambda *_: self.update_estimate())
        self.start_button.clicked.connect(self.start)
        self.resume_button.clicked.connect(self.resume)
        self.stop_button.clicked.connect(self.stop)
        self._poll = QTimer(self, interval=3000)
        self._poll.timeout.connect(self._poll_store)
        self.session.speeds_changed.connect(self.update_estimate)
        events = self.session.choices.events  # a custom grid follows the other tabs
        events = [events.train, events.method, events.model, events.data]
        for event in events:
            event.connect(self._choices_changed)
        self.destroyed.connect(
            lambda *_, f=self._choices_changed: [e.disconnect(f) for e in events]
        )
        self.session.when_ready(self._populate)

    # -- the grid --------------------------------------------------------------------------

    def _populate(self, catalog: dict) -> None:
        if self.preset.count():
            return
        self.preset.addItems([CUSTOM, *catalog["presets"]])
        self._preset_changed(self.preset.currentText())
        self.session.call(  # the speeds of the runs already in the store
            requests.Rows(self.session.storage),
            on_done=self._speeds_from_rows,
            on_failed=lambda *_: None,
        )

    def _speeds_from_rows(self, rows: list[dict]) -> None:
        for row in rows:
            if row["status"] == "complete" and row.get("train_time_s"):
                speed = (row.get("iterations") or 0) / row["train_time_s"]
                self.session.measured(row["model"], str(row["run_dir"]), speed)

    def _choices_changed(self, *_) -> None:
        """A custom grid follows the Data, Model and Train tabs."""
        if self.preset.currentText() == CUSTOM and self.session.catalog is not None:
            self.fill_custom()

    def _executor_changed(self, text: str) -> None:
        self.slurm.setVisible(self.executor_kind() == "slurm")
        self.workers.setEnabled(self.executor_kind() != "inline")
        self.update_estimate()

    def set_grid(self, grid: dict[str, list]) -> None:
        self.grid.blockSignals(True)
        self.grid.setRowCount(len(grid))
        for i, (name, values) in enumerate(grid.items()):
            item = QTableWidgetItem(name)
            self.grid.setItem(i, 0, item)
            self.grid.setItem(i, 1, QTableWidgetItem(values_text(values)))
        self.grid.blockSignals(False)
        self.update_estimate()

    def grid_values(self) -> dict[str, list]:
        grid = {}
        for i in range(self.grid.rowCount()):
            name, values = self.grid.item(i, 0), self.grid.item(i, 1)
            if name and values and name.text().strip():
                parsed = parse_values(values.text())
                if not parsed:
                    raise UserError(f"Give at least one value for {name.text()!r}.")
                grid[name.text().strip()] = parsed
        if not grid:
            raise UserError(
                "The sweep grid is empty; give values for at least one hyperparameter."
            )
        return grid

    def _preset_changed(self, name: str) -> None:
        if not name:
            return
        if name == CUSTOM:
            self.fill_custom()
            return
        preset = self.session.catalog["presets"][name]
        grids = preset["grid"] if isinstance(preset["grid"], list) else [preset["grid"]]
        merged: dict[str, list] = {}
        for key, values in (item for grid in grids for item in grid.items()):
            merged[key] = merged.get(key, []) + values
        merged = {k: list(dict.fromkeys(map(canonical, v))) for k, v in merged.items()}
        self.set_grid(merged)

    def _settings(self):
        """The training settings a run of the chosen model gets (recipe + edits)."""
        choices = self.session.choices
        return resolve(choices.train, choices.model["name"])[0]

    def fill_custom(self) -> None:
        """One row per method hyperparameter and the main training settings."""
        if self.session.catalog is None:  # the service has not answered yet
            return
        grid: dict[str, list] = {
            name: [canonical(value)]
            for name, value in self.session.choices.method.items()
            if name != "method" and not name.startswith("freeze_") and value is not None
        }
        settings = self._settings()
        grid["lr"] = [settings.lr]
        grid["iterations"] = [settings.iterations]
        if "rank" in grid:
            grid["rank"] = [2, 8]
        self.set_grid(grid)

    def build_spec(self) -> dict[str, Any]:
        grid = self.grid_values()
        name = self.preset.currentText()
        if name != CUSTOM:
            preset = dict(self.session.catalog["presets"][name])
            fixed = {k: v for k, v in preset.get("fixed", {}).items() if k not in grid}
            return preset | {"grid": grid, "fixed": fixed, "seeds": self.seeds.value()}
        choices = self.session.choices
        if choices.data is None:
            self.session.dock("Data")
        dataset, files = sweep_data(self.viewer, self.session.home, choices.data)
        method, model = choices.method, choices.model
        if model.get("checkpoint"):
            raise UserError(
                "Sweeps run on named base models; a custom checkpoint is not supported yet."
            )
        fixed = {
            k: canonical(v)
            for k, v in (method | choices.train).items()
            if k not in grid and k not in ("method", "device") and v is not None
        }
        where = dataset.removeprefix("napari layers ")
        spec = {
            "dataset": dataset,
            "model": model["name"],
            "method": method["method"],
            "grid": grid,
            "fixed": fixed,
            "metrics": list(catalog.PROMPT),
            "data": files,
            "seeds": self.seeds.value(),
        }
        tag = f"{method['method']}-{model['name']}-{where[:40]}"
        return {"name": spec_name(tag, spec)} | spec

    def update_estimate(self) -> None:
        try:
            grid = self.grid_values()
        except UserError as error:
            self.estimate.setText(str(error))
            return
        points = math.prod(len(v) for v in grid.values()) * self.seeds.value()
        iterations = max(grid.get("iterations", [self._fixed_iterations()]), key=float)
        model = self._model_name()
        workers = 1 if self.executor_kind() == "inline" else self.workers.value()
        text = f"<b>{points} runs</b> of up to {number(int(iterations))} iterations"
        measured = self.session.speed(model)
        if measured is None:
            text += (
                f"; the time shows once a run of {model} has been measured here "
                "(Train, or a first point)"
            )
        else:
            speed, runs = measured
            # + 15 % for each run's evaluation on the held-out images
            minutes = points * float(iterations) / speed / 60 / workers * 1.15
            text += (
                f": about <b>{number(minutes, 0)} min</b> here ({speed:.2f} it/s, "
                f"measured by {runs} run{'s' * (runs != 1)} of {model} here)"
            )
        self.estimate.setText(text + ".")

    def _fixed_iterations(self) -> int:
        name = self.preset.currentText()
        if name and name != CUSTOM and self.session.catalog:
            preset = self.session.catalog["presets"][name]
            if "iterations" in preset.get("fixed", {}):
                return preset["fixed"]["iterations"]
            return recipe_for(preset["model"]).settings.get("iterations", 1000)
        return self._settings().iterations

    def _model_name(self) -> str:
        name = self.preset.currentText()
        if name and name != CUSTOM and self.session.catalog:
            return self.session.catalog["presets"][name]["model"]
        return self.session.choices.model["name"]

    def executor_kind(self) -> str:
        return self.executor.currentData()

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.spec = self.build_spec()
        except UserError as error:
            notify_failure(gui_sentence(str(error)), True)
            return
        self._launch()

    def resume(self) -> None:
        """Run what is left of the last sweep (finished points are kept)."""
        if self.spec is None:
            self.start()
            return
        self._launch()

    def _launch(self) -> None:
        if self.running:
            return
        request = requests.Sweep(
            spec=self.spec,
            storage=self.session.storage,
            runs=str(self.session.home / "sweeps" / self.spec["name"]),
            executor=self.executor_kind(),
            workers=self.workers.value(),
            options=self.slurm.options(),
        )
        if self.start_job(f"Sweep {self.spec['name']}", request) is None:
            return  # another training-type job runs: the manager said so
        self.progress.reset()
        self.start_button.setEnabled(False)
        self.resume_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status.setText(
            f"Sweep {self.spec['name']} started ({self.executor.currentText()})."
        )
        self._poll.start()

    def stop(self) -> None:
        if self.running:
            self.run.stop()
            self.stop_button.setEnabled(False)
            self.status.setText(
                "Stopping: the running point saves a checkpoint and is queued again on Resume."
            )

    def _on_event(self, payload: dict) -> None:
        if "trial" not in payload:
            states = payload.get("states") or {}
            jobs = [f"{j} {states[j]}" if j in states else j for j in payload["jobs"]]
            self.status.setText(f"jobs: {', '.join(jobs)}")
            return
        event, trial = payload["event"], payload["trial"]
        if event.kind == "step":
            run = f"{self.spec['name']}:{trial}"
            self.session.measured(self._model_name(), run, event.it_per_s)
        elif event.kind == "progress" and event.done == 0 and event.message:
            self.status.setText(f"Trial {trial}: {event.message}")
        self.progress.follow(trial, event)

    def _poll_store(self) -> None:
        if self.spec is not None:
            self.session.call(
                requests.Rows(self.session.storage),
                on_done=lambda rows: self.progress.merge(rows, self.spec),
                on_failed=lambda *_: None,
            )

    def _finish(self) -> None:
        self._poll.stop()
        self._poll_store()
        self.start_button.setEnabled(True)
        self.resume_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.session.results_changed.emit()

    def _on_done(self, result: dict) -> None:
        self._finish()
        if result.get("cancelled") or result.get("stopped"):
            self.status.setText(
                "Sweep stopped; press Resume to run the points that are left."
            )
        else:
            self.status.setText(
                f"Sweep finished: {result.get('ran', 0)} runs in this session."
            )
            self.session.info(f"Sweep {self.spec['name']} finished.")

    def _on_failed(self, message: str, user_error: bool) -> None:
        self._finish()
        message = gui_sentence(message) if user_error else message
        self.status.setText(f"Sweep failed: {message.splitlines()[0]}")
        notify_failure(message, user_error)
