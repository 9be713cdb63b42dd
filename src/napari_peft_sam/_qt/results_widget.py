"""Results: every run in the store, sortable and filterable, with exports and a heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core import catalog, requests
from ._plots import Heatmap
from ._session import session_for

ALL = "all"


class _Item(QTableWidgetItem):
    """Sorts numbers as numbers (and empty cells last)."""

    def __init__(self, text: str, key: Any) -> None:
        super().__init__(text)
        self.key = key
        self.setFlags(self.flags() & ~Qt.ItemIsEditable)

    def __lt__(self, other) -> bool:
        a, b = self.key, getattr(other, "key", None)
        if a is None or b is None:
            return b is None and a is not None
        if isinstance(a, int | float) and isinstance(b, int | float):
            return a < b
        return str(a) < str(b)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return (
            f"{value:.4g}"
            if abs(value) < 0.01 or abs(value) >= 1000
            else f"{value:.3f}"
        )
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


class ResultsWidget(QWidget):
    """The results table (one row per run), exports and a metric heatmap."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.rows: list[dict[str, Any]] = []
        self.visible_rows: list[dict[str, Any]] = []

        self.filters = {k: QComboBox() for k in ("study", "dataset", "method", "model")}
        self.table = QTableWidget()
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(180)
        self.refresh_button = QPushButton("Refresh")
        self.csv_button = QPushButton("Export CSV…")
        self.md_button = QPushButton("Export Markdown…")
        self.metric = QComboBox()
        self.metric.addItems(catalog.NAMES)
        self.metric.setCurrentText(catalog.PRIMARY)
        self.x_param, self.y_param = QComboBox(), QComboBox()
        self.heatmap = Heatmap()
        self.status = QLabel()

        filters = QHBoxLayout()
        for name, combo in self.filters.items():
            filters.addWidget(QLabel(name))
            combo.addItem(ALL)
            combo.currentTextChanged.connect(lambda *_: self.render())
            filters.addWidget(combo, 1)
        buttons = QHBoxLayout()
        for button in (self.refresh_button, self.csv_button, self.md_button):
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
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.table, 2)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        layout.addLayout(heat)
        layout.addWidget(self.heatmap, 1)

        self.refresh_button.clicked.connect(self.refresh)
        self.csv_button.clicked.connect(lambda: self.export("csv"))
        self.md_button.clicked.connect(lambda: self.export("markdown"))
        self.table.cellDoubleClicked.connect(self._open_row)
        self.session.results_changed.connect(self.refresh)
        self.refresh()

    # -- data ------------------------------------------------------------------------------

    def refresh(self) -> None:
        self.status.setText("Reading the results store…")
        self.session.call(requests.Rows(self.session.storage), on_done=self._set_rows)

    def _set_rows(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        for name, combo in self.filters.items():
            current = combo.currentText()
            values = sorted({str(r.get(name)) for r in rows if r.get(name) is not None})
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([ALL, *values])
            combo.setCurrentText(current if current in values else ALL)
            combo.blockSignals(False)
        params = sorted(
            {k for r in rows for k in r["params"] if k not in ("dataset", "model")}
        )
        for combo, default in ((self.x_param, "alpha"), (self.y_param, "rank")):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(params)
            combo.setCurrentText(current if current in params else default)
            combo.blockSignals(False)
        self.render()

    def filtered(self) -> list[dict[str, Any]]:
        out = self.rows
        for name, combo in self.filters.items():
            if combo.currentText() != ALL:
                out = [r for r in out if str(r.get(name)) == combo.currentText()]
        return out

    def render(self) -> None:
        rows = self.filtered()
        self.visible_rows = rows
        params = sorted(
            {k for r in rows for k in r["params"] if k not in ("dataset", "model")}
        )
        head = ["study", "status", "dataset", "model", "method"]
        columns = head + list(catalog.NAMES) + params + ["trainable", "time (s)"]
        self.table.setSortingEnabled(False)
        self.table.clear()
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            values = [row.get(k) for k in head]
            values += [row["metrics"].get(m) for m in catalog.NAMES]
            values += [row["params"].get(p) for p in params]
            values += [row.get("trainable_parameters"), row.get("train_time_s")]
            for j, value in enumerate(values):
                item = _Item(
                    _fmt(value), value if not isinstance(value, list) else str(value)
                )
                item.setData(Qt.UserRole, i)
                if row.get("error"):
                    item.setToolTip(row["error"])
                self.table.setItem(i, j, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        self.status.setText(
            f"{len(rows)} of {len(self.rows)} runs · store {self.session.storage} · "
            "double-click a row to try its model"
        )
        self.draw_heatmap()

    def row_at(self, table_row: int) -> dict[str, Any]:
        return self.visible_rows[self.table.item(table_row, 0).data(Qt.UserRole)]

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
        metric, x, y = (
            self.metric.currentText(),
            self.x_param.currentText(),
            self.y_param.currentText(),
        )
        rows = [r for r in self.visible_rows if x in r["params"] and y in r["params"]]
        xs = sorted({r["params"][x] for r in rows}, key=_order)
        ys = sorted({r["params"][y] for r in rows}, key=_order)
        cells = {}
        for r in rows:
            value = r["metrics"].get(metric)
            cell = (r["params"][x], r["params"][y])
            if value is not None and (cells.get(cell) is None or value > cells[cell]):
                cells[cell] = value
            cells.setdefault(cell, None)
        self.heatmap.set_data(xs, ys, cells, f"{metric} (best per cell)", x, y)


def _order(value):
    return (0, value) if isinstance(value, int | float) else (1, str(value))
