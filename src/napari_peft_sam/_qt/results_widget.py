"""Results: every run in the store, sortable and filterable, with exports and a heatmap.

A tuned run's metrics read ``before → after``: its base model scored on the
run's own held-out images (``core.baseline``, evaluated once per base model
and test set and cached under the home folder), then the run.

With repeated seeds the table shows one row per point (mean ± 95 % interval,
n, the best in bold, ≈ where the paired test cannot tell it from the best);
the heatmap is ``core.heatmap``'s: this widget only renders what core computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from ..core import catalog, requests
from ..core.errors import UserError
from ..core.heatmap import heatmap_data
from ..core.results import is_seeded, point_rows
from ..core.stats import INTERVAL, TEST
from . import _results_cells as cells
from ._plots import Heatmap
from ._session import session_for
from .effort_plot import EffortPlot

ALL = "all"
NOT_AXES = ("dataset", "model", "seed")  # never a heatmap axis


class ResultsWidget(QWidget):
    """The results table (one row per run), exports and a metric heatmap."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.rows: list[dict[str, Any]] = []
        self.visible_rows: list[dict[str, Any]] = []  # the filtered runs
        self.shown_rows: list[dict[str, Any]] = []  # the table's rows
        self.before: dict[str, dict[str, float | None]] = {}  # run_dir -> base scores

        self.filters = {k: QComboBox() for k in ("study", "dataset", "method", "model")}
        self.table = QTableWidget()
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(120)
        self.refresh_button = QPushButton("Refresh")
        self.csv_button = QPushButton("Export CSV…")
        self.md_button = QPushButton("Export Markdown…")
        self.run_button = QPushButton("Export run…")
        self.run_button.setToolTip(
            "Export the selected run for micro-sam, its annotator or bioimage.io."
        )
        self.metric = QComboBox()
        self.metric.addItems(catalog.NAMES)
        self.metric.setCurrentText(catalog.PRIMARY)
        self.x_param, self.y_param = QComboBox(), QComboBox()
        self.heatmap = Heatmap()
        self.status = QLabel()
        self.status.setWordWrap(True)  # a long store path must not widen the window
        self.group = QCheckBox("one row per point: mean ± 95 % interval over seeds")
        self.group.setChecked(True)
        self.group.setToolTip(
            f"{INTERVAL}; bold: the best mean of a column; ≈: not "
            f"distinguishable from it ({TEST}). Untick to see every seed's run."
        )
        self.group.toggled.connect(lambda *_: self.render())

        filters = QHBoxLayout()
        for name, combo in self.filters.items():
            filters.addWidget(QLabel(name))
            combo.addItem(ALL)
            combo.currentTextChanged.connect(lambda *_: self.render())
            filters.addWidget(combo, 1)
        buttons = QHBoxLayout()
        for button in (
            self.refresh_button,
            self.csv_button,
            self.md_button,
            self.run_button,
        ):
            buttons.addWidget(button)
        heat = QHBoxLayout()
        for label, combo in (
            ("metric", self.metric),
            ("x", self.x_param),
            ("y", self.y_param),
        ):
            heat.addWidget(QLabel(label))
            heat.addWidget(combo, 1)
            combo.currentTextChanged.connect(lambda *_: self.draw_heatmap())
        # full width at the bottom: table, heatmap and effort side by side
        runs, plots = QVBoxLayout(), QVBoxLayout()
        runs.addLayout(filters)
        runs.addWidget(self.group)
        runs.addWidget(self.table, 1)
        runs.addWidget(self.status)
        runs.addLayout(buttons)
        plots.addLayout(heat)
        plots.addWidget(self.heatmap, 1)
        layout = QHBoxLayout(self)
        layout.addLayout(runs, 3)
        layout.addLayout(plots, 2)
        layout.addWidget(EffortPlot(napari_viewer), 1)  # annotate-retrain rounds

        self.refresh_button.clicked.connect(self.refresh)
        self.csv_button.clicked.connect(lambda: self.export("csv"))
        self.md_button.clicked.connect(lambda: self.export("markdown"))
        self.run_button.clicked.connect(self.export_run)
        self.table.cellDoubleClicked.connect(self._open_row)
        self.session.results_changed.connect(self.refresh)
        self.refresh()

    # -- data ------------------------------------------------------------------------------

    def refresh(self) -> None:
        self.status.setText("Reading the results store…")
        self.session.call(requests.Rows(self.session.storage), on_done=self._set_rows)

    def _set_rows(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        missing = [
            r for r in rows if r.get("run_dir") and r["run_dir"] not in self.before
        ]
        if missing:  # the base models' scores follow (once per base model and data)
            asked = {r["run_dir"]: {} for r in missing}  # none: asked once, not again
            self.session.call(
                requests.BeforeScores(missing, str(self.session.home)),
                on_done=lambda scores: self._set_before(asked | scores),
            )
        for name, combo in self.filters.items():
            current = combo.currentText()
            values = sorted({str(r.get(name)) for r in rows if r.get(name) is not None})
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([ALL, *values])
            combo.setCurrentText(current if current in values else ALL)
            combo.blockSignals(False)
        params = sorted({k for r in rows for k in r["params"] if k not in NOT_AXES})
        for combo, default in ((self.x_param, "alpha"), (self.y_param, "rank")):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(params)
            combo.setCurrentText(current if current in params else default)
            combo.blockSignals(False)
        self.render()

    def _set_before(self, scores: dict[str, dict[str, float | None]]) -> None:
        self.before |= scores
        self.render()

    def filtered(self) -> list[dict[str, Any]]:
        out = self.rows
        for name, combo in self.filters.items():
            if combo.currentText() != ALL:
                out = [r for r in out if str(r.get(name)) == combo.currentText()]
        return out

    def render(self) -> None:
        runs = self.filtered()
        self.visible_rows = runs
        self.group.setVisible(is_seeded(self.rows))
        grouped = self.group.isChecked() and is_seeded(runs)
        rows = self.shown_rows = point_rows(runs) if grouped else runs
        params = sorted(
            {k for r in rows for k in r["params"] if k not in ("dataset", "model")}
        )
        head = ["study", "status", "dataset", "model", "method"]
        columns = head + list(catalog.NAMES) + params
        columns += ["n"] * grouped + [cells.TRAINABLE, cells.TIME]
        self.table.setSortingEnabled(False)
        self.table.clear()
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(rows))
        kinds = head + ["metric"] * len(catalog.NAMES) + params
        kinds += ["n"] * grouped + [cells.TRAINABLE, cells.TIME]
        for i, row in enumerate(rows):
            before = self.before.get(row.get("run_dir") or "", {})
            values = [row.get(k) for k in head]
            values += [_metric_cell(row, m) for m in catalog.NAMES]
            values += [row["params"].get(p) for p in params]
            values += [row.get("n")] * grouped
            values += [row.get("trainable_parameters"), row.get("train_time_s")]
            befores = [None] * len(head) + [before.get(m) for m in catalog.NAMES]
            for j, value in enumerate(values):
                old = befores[j] if j < len(befores) else None
                item = cells.item(value, i, row.get("error"), kinds[j], old)
                self.table.setItem(i, j, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        what = f"{len(rows)} points ({len(runs)} runs)" if grouped else f"{len(rows)}"
        shown = any(self.before.get(r.get("run_dir") or "") for r in rows)
        self.status.setText(
            f"{what} of {len(self.rows)} runs · store {self.session.storage} · "
            + (f"metrics: base model {cells.ARROW} run · " if shown else "")
            + "double-click a row to try its model"
        )
        self.draw_heatmap()

    def row_at(self, table_row: int) -> dict[str, Any]:
        """The row shown at ``table_row`` (a point's first run when grouped)."""
        return self.shown_rows[self.table.item(table_row, 0).data(Qt.UserRole)]

    def _open_row(self, table_row: int, _column: int) -> None:
        row = self.row_at(table_row)
        if row.get("run_dir") and Path(row["run_dir"]).exists():
            self.session.open_run.emit(row["run_dir"])
            self.session.info(
                f"Loaded {Path(row['run_dir']).name} into the prompt tester."
            )
        else:
            self.session.info(
                "This row has no run folder on this machine (a base-model row or a remote run)."
            )

    def export_run(self):
        """The export dialog for the selected row's run folder."""
        from .export_dialog import export_dialog

        selected = self.table.selectionModel().selectedRows()
        row = self.row_at(selected[0].row()) if selected else None
        if row is None or not row.get("run_dir") or not Path(row["run_dir"]).exists():
            self.session.info(
                "Select a row of a trained run (its folder must be here)."
            )
            return None
        return export_dialog(self, self.session, row["run_dir"])

    # -- exports and heatmap ----------------------------------------------------------

    def export(self, fmt: str, path: str | None = None) -> None:
        if path is None:
            suffix = "csv" if fmt == "csv" else "md"
            path, _ = QFileDialog.getSaveFileName(
                self, "Export results", f"results.{suffix}"
            )
            if not path:
                return

        def write(text: str) -> None:
            from ..core.files import atomic_write_text

            atomic_write_text(path, text)
            self.session.info(f"Wrote {len(self.visible_rows)} rows to {path}.")

        self.session.call(requests.RenderTable(self.visible_rows, fmt), on_done=write)

    def draw_heatmap(self) -> None:
        """Render ``core.heatmap.heatmap_data`` of the filtered runs."""
        metric, x, y = (
            self.metric.currentText(),
            self.x_param.currentText(),
            self.y_param.currentText(),
        )
        if not (metric and x and y):
            self.heatmap.set_heatmap(None, "no hyperparameters to plot yet")
            return
        try:
            data = heatmap_data(self.visible_rows, metric, x, y)
        except UserError as error:
            self.heatmap.set_heatmap(None, str(error))
            return
        self.heatmap.set_heatmap(data)


def _metric_cell(row: dict[str, Any], metric: str):
    """A run's value, or a point's (summary, mark) when grouped."""
    if "summaries" in row:
        return (row["summaries"].get(metric), row["marks"].get(metric))
    return row["metrics"].get(metric)
