"""Model pickers: base models and every run under the home folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox

from ..core.catalog import PRIMARY
from ..core.display import number
from ..core.run_index import list_runs

MODEL_CHARS = 16  # what a model box shows at least


def model_request(choice: str, device: str = "auto") -> dict[str, Any]:
    """The service's description of a model: a run folder or a base model name."""
    if Path(choice).is_absolute():
        return {"run": choice, "device": device}
    return {"name": choice, "device": device}


def chosen(combo: QComboBox) -> str:
    """A model combo's choice: the run folder behind 'run: NAME', else the name."""
    return combo.currentData() or combo.currentText()


def known_runs(session) -> list[dict[str, Any]]:
    """Every run folder under home (stopped ones too), and runs added this
    session elsewhere, newest first."""
    rows = list_runs(session.home)
    seen = {r["run_dir"] for r in rows}
    rows += [
        {"run_dir": d, "name": Path(d).name, "status": "", "score": None}
        for d in session.runs
        if d not in seen
    ]
    return rows[::-1]


def run_label(row: dict[str, Any]) -> str:
    parts = [row["status"]] if row["status"] not in ("", "finished") else []
    if row["score"] is not None:
        parts.append(f"{PRIMARY} {number(row['score'])}")
    return f"run: {row['name']}" + (f" ({', '.join(parts)})" if parts else "")


def fill_models(combo: QComboBox, models: list[str], runs: list[dict]) -> None:
    """Runs first (newest on top), then base models; the choice is kept."""
    keep = chosen(combo) or "demo"
    combo.blockSignals(True)
    combo.clear()
    for row in runs:
        combo.addItem(run_label(row), row["run_dir"])
        combo.setItemData(combo.count() - 1, row["run_dir"], Qt.ToolTipRole)
    combo.addItems(models)
    index = combo.findData(keep)
    combo.setCurrentIndex(index if index >= 0 else max(combo.findText(keep), 0))
    combo.blockSignals(False)
    # a run's long name must not widen the dock (and the window) past the
    # screen: the box shows its start, the list opens as wide as the names
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(MODEL_CHARS)
    combo.view().setMinimumWidth(combo.view().sizeHintForColumn(0) + 24)
