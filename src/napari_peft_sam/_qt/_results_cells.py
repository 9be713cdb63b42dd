"""The Results table's cells: numbers as ``core.display`` spells them, sort keys,
and a tuned run's metric as ``before → after`` (its base model on the same images)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTableWidgetItem

from ..core.display import duration, number, value_text

ARROW = "→"
TIME, TRAINABLE = "time", "trainable"  # columns spelled as durations / counts


class Item(QTableWidgetItem):
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


def text(value: Any, column: str = "") -> str:
    """A cell's text: missing empty, a selection 'q+v', counts 258,632, times 4:27."""
    if value is None:
        return ""
    if column == TIME and isinstance(value, int | float):
        return duration(value)
    if column == TRAINABLE and isinstance(value, int | float):
        return number(int(value))
    return value_text(value)  # hyperparameters: 0.001, 1e-05, q+v


def metric_text(value, before: float | None = None) -> tuple[str, Any, bool]:
    """(text, sort key, bold) of a run's metric or a point's (summary, mark),
    led by the base model's value when it is known: ``0.412 → 0.655``."""
    bold = False
    if isinstance(value, tuple):  # a point's metric: mean ± half-width
        summary, mark = value
        shown, key = "", None
        if summary is not None:
            shown, key = f"{summary.mean:.3f}", summary.mean
            shown += f" ± {summary.half:.3f}" if summary.half is not None else ""
            shown += " ≈" if mark == "tie" else ""
        bold = mark == "best"
    else:
        shown, key = ("", None) if value is None else (number(value), value)
    if before is not None and shown:
        shown = f"{before:.3f} {ARROW} {shown}"
    return shown, key, bold


def item(value, index: int, error: str | None, column: str = "", before=None) -> Item:
    """The table's item of ``value`` at row ``index`` (its tooltip: the error)."""
    if column == "metric" or isinstance(value, tuple):
        shown, key, bold = metric_text(value, before)
    else:
        shown, key, bold = text(value, column), value, False
        key = str(key) if isinstance(key, list | dict) else key
    cell = Item(shown, key)
    cell.setData(Qt.UserRole, index)
    if bold:
        font = cell.font()
        font.setBold(True)
        cell.setFont(font)
    if error:
        cell.setToolTip(error)
    elif before is not None and shown:
        cell.setToolTip(
            f"the base model before training {ARROW} this run, on the same "
            "held-out images"
        )
    return cell
