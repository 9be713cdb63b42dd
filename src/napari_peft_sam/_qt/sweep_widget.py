"""Sweep: a preset or value lists per hyperparameter, run here, locally or on SLURM."""

from __future__ import annotations

import math
import re
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core import catalog, requests
from ..core.errors import UserError
from ..core.executors import EXECUTORS
from ._service import ServiceClient
from ._session import notify_failure, session_for
from .data_widget import sweep_data

CUSTOM = "custom (from Data and Model)"
# iterations per second on a CPU where nothing was measured yet (benchmarks/results)
FALLBACK_SPEED = {"tiny": 2.0, "demo": 4.0}


def parse_values(text: str) -> list:
    """'1e-3, 4, q+v' -> [0.001, 4, 'q+v']: numbers as numbers, the rest as text."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            number = float(part)
            out.append(
                int(number)
                if number.is_integer() and "." not in part and "e" not in part.lower()
                else number
            )
        except ValueError:
            out.append(part)
    return out


def _text(values) -> str:
    return ", ".join("+".join(v) if isinstance(v, list) else str(v) for v in values)


class SweepWidget(QWidget):
    """Builds a sweep spec, shows its size and cost, runs it and follows each trial."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.process: ServiceClient | None = None
        self.job = None
        self.spec: dict[str, Any] | None = None
        self.trials: dict[int, dict[str, Any]] = {}

        self.preset = QComboBox()
        self.grid = QTableWidget(0, 2)
        self.grid.setHorizontalHeaderLabels(
            ["hyperparameter", "values (comma-separated)"]
        )
        self.grid.horizontalHeader().setStretchLastSection(True)
        self.grid.verticalHeader().setVisible(False)
        self.grid.setMinimumHeight(150)
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
        self.slurm = QGroupBox("SLURM")
        self.partition, self.account_setup = QLineEdit(), QLineEdit()
        self.partition.setPlaceholderText("default partition")
        self.account_setup.setPlaceholderText(
            "e.g. module load cuda; source venv/bin/activate"
        )
        self.time_min = QSpinBox(minimum=1, maximum=10_000, value=240)
        # -1 / 0 show "auto": what the partition's nodes offer (executors.slurm_request)
        self.gpus = QSpinBox(minimum=-1, maximum=8, value=-1)
        self.gpus.setSpecialValueText("auto")
        self.mem = QSpinBox(minimum=0, maximum=2048, value=0)
        self.mem.setSpecialValueText("auto")
        slurm = QFormLayout(self.slurm)
        slurm.addRow("partition", self.partition)
        slurm.addRow("time limit (min)", self.time_min)
        slurm.addRow("GPUs per job", self.gpus)
        slurm.addRow("memory (GB)", self.mem)
        slurm.addRow("setup", self.account_setup)
        self.slurm.setVisible(False)
        self.start_button, self.stop_button = QPushButton("Start"), QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        self.stop_button.setEnabled(False)
        self.progress = QTableWidget(0, 4)
        self.progress.setHorizontalHeaderLabels(["trial", "values", "state", "result"])
        header = self.progress.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.Stretch)
        self.progress.verticalHeader().setVisible(False)
        self.progress.setMinimumHeight(120)
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
        self.session.when_ready(self._populate)

    # -- the grid --------------------------------------------------------------------------

    def _populate(self, catalog: dict) -> None:
        if self.preset.count():
            return
        self.preset.addItems([CUSTOM, *catalog["presets"]])
        self._preset_changed(self.preset.currentText())

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
            self.grid.setItem(i, 1, QTableWidgetItem(_text(values)))
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
        for grid in grids:
            for key, values in grid.items():
                merged.setdefault(key, [])
                merged[key] += [v for v in values if v not in merged[key]]
        self.set_grid(merged)

    def _settings(self):
        """The training settings a run of the chosen model gets (recipe + edits)."""
        from ..core.recipes import resolve

        choices = self.session.choices
        return resolve(choices.train, choices.model["name"])[0]

    def fill_custom(self) -> None:
        """One row per method hyperparameter and the main training settings."""
        if self.session.catalog is None:  # the service has not answered yet
            return
        grid: dict[str, list] = {
            name: [value]
            for name, value in self.session.choices.method.items()
            if name != "method" and not name.startswith("freeze_") and value is not None
        }
        settings = self._settings()
        grid["lr"] = [settings.lr]
        grid["iterations"] = [settings.iterations]
        if "rank" in grid:
            grid["rank"] = [2, 8]
        self.set_grid(grid)

    # -- the spec and its cost -------------------------------------------------------------

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
            k: v
            for k, v in method.items()
            if k not in grid and k != "method" and v is not None
        }
        fixed |= {
            k: v
            for k, v in choices.train.items()
            if k not in grid and k != "device" and v is not None
        }
        where = re.sub(r"[^A-Za-z0-9]+", "-", dataset.removeprefix("napari layers "))
        tag = f"{method['method']}-{model['name']}-{where.strip('-')[:40]}"
        return {
            "name": f"gui-{tag}",
            "dataset": dataset,
            "model": model["name"],
            "method": method["method"],
            "grid": grid,
            "fixed": fixed,
            "metrics": list(catalog.PROMPT),
            "data": files,
            "seeds": self.seeds.value(),
        }

    def update_estimate(self) -> None:
        try:
            grid = self.grid_values()
        except UserError as error:
            self.estimate.setText(str(error))
            return
        points = math.prod(len(v) for v in grid.values()) * self.seeds.value()
        iterations = max(grid.get("iterations", [self._fixed_iterations()]), key=float)
        model = self._model_name()
        speed = self.session.speeds.get(model) or FALLBACK_SPEED.get(model)
        workers = 1 if self.executor_kind() == "inline" else self.workers.value()
        text = f"<b>{points} runs</b> of up to {iterations} iterations"
        if speed:
            minutes = (
                points * float(iterations) / speed / 60 / workers * 1.15
            )  # + evaluation
            source = "measured" if model in self.session.speeds else "typical CPU"
            text += (
                f": about <b>{minutes:.0f} min</b> here ({speed:.2f} it/s, {source})"
            )
        self.estimate.setText(text + ".")

    def _fixed_iterations(self) -> int:
        name = self.preset.currentText()
        if name and name != CUSTOM and self.session.catalog:
            preset = self.session.catalog["presets"][name]
            if "iterations" in preset.get("fixed", {}):
                return preset["fixed"]["iterations"]
            from ..core.recipes import recipe_for

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

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.finished

    def start(self) -> None:
        try:
            self.spec = self.build_spec()
        except UserError as error:
            notify_failure(str(error), True)
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
        self.trials.clear()
        self.progress.setRowCount(0)
        options = {
            "partition": self.partition.text().strip() or None,
            "time": self.time_min.value(),
            "gpus": None if self.gpus.value() < 0 else self.gpus.value(),
            "mem": self.mem.value() or None,
            "setup": [
                s.strip() for s in self.account_setup.text().split(";") if s.strip()
            ],
        }
        self.process = ServiceClient("sweep process")
        self.job = self.process.call(
            requests.Sweep(
                spec=self.spec,
                storage=self.session.storage,
                runs=str(self.session.home / "sweeps" / self.spec["name"]),
                executor=self.executor_kind(),
                workers=self.workers.value(),
                options=options,
            )
        )
        self.job.event.connect(self._on_event)
        self.job.done.connect(self._on_done)
        self.job.failed.connect(self._on_failed)
        self.start_button.setEnabled(False)
        self.resume_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status.setText(
            f"Sweep {self.spec['name']} started ({self.executor.currentText()})."
        )
        self._poll.start()

    def stop(self) -> None:
        if self.running:
            self.job.stop()
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
        state = self.trials.setdefault(
            trial, {"values": "", "state": "running", "result": ""}
        )
        if event.kind == "step":
            state["state"] = f"step {event.step}/{event.total}"
            model = self._model_name()
            self.session.speeds[model] = event.it_per_s
        elif event.kind == "progress":
            state["state"] = f"evaluating {event.done}/{event.total}"
        self._render_trials()

    def _poll_store(self) -> None:
        if self.spec is None:
            return
        self.session.call(
            requests.Rows(self.session.storage),
            on_done=self._merge_rows,
            on_failed=lambda *_: None,
        )

    def _merge_rows(self, rows: list[dict]) -> None:
        for row in rows:
            if self.spec is None or row["study"] != self.spec["name"]:
                continue
            state = self.trials.setdefault(
                row["trial"], {"values": "", "state": "", "result": ""}
            )
            state["values"] = ", ".join(f"{k}={v}" for k, v in row["params"].items())
            if row["status"] != "running" or not state["state"].startswith(
                ("step", "eval")
            ):
                state["state"] = {"fail": "failed", "complete": "done"}.get(
                    row["status"], row["status"]
                )
            metric = row["metrics"].get(catalog.PRIMARY)
            state["result"] = (
                f"{catalog.PRIMARY} {metric:.3f}"
                if metric is not None
                else (row.get("error") or "")
            )
        self._render_trials()

    def _render_trials(self) -> None:
        self.progress.setRowCount(len(self.trials))
        for i, (trial, state) in enumerate(sorted(self.trials.items())):
            for j, text in enumerate(
                (str(trial), state["values"], state["state"], state["result"])
            ):
                self.progress.setItem(i, j, QTableWidgetItem(text))

    def _finish(self) -> None:
        self._poll.stop()
        self._poll_store()
        self.start_button.setEnabled(True)
        self.resume_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        if self.process is not None:
            self.process.close()
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
        self.status.setText(f"Sweep failed: {message.splitlines()[0]}")
        notify_failure(message, user_error)
