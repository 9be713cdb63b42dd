"""The Sweep widget's parts: value lists, the SLURM options, the spec's name."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from qtpy.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHeaderView,
    QLineEdit,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ..core.catalog import PRIMARY
from ..core.display import number, value_text
from ..core.options import SLURM, Option


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


def values_text(values) -> str:
    """A grid row's values in their one spelling (targets as 'q+v')."""
    return ", ".join(value_text(v) if isinstance(v, list) else str(v) for v in values)


def canonical(value: Any) -> Any:
    """A value as the sweep grid spells it: lists as 'q+v'."""
    return value_text(value) if isinstance(value, (list, tuple)) else value


def spec_name(tag: str, spec: dict[str, Any]) -> str:
    """``gui-{tag}-{fingerprint}``: the same settings give the same sweep (so
    Resume continues it), other settings another one (the store never mixes
    them)."""
    body = {k: v for k, v in spec.items() if k != "name"}
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, default=str).encode()
    ).hexdigest()
    tag = re.sub(r"[^A-Za-z0-9]+", "-", tag).strip("-")[:60]
    return f"gui-{tag}-{digest[:6]}"


def _slurm_editor(option: Option) -> QWidget:
    """A line edit or a spin box for one SLURM row; an int row without a
    default starts at "auto" (one below its smallest value: the partition's
    nodes decide, ``executors.slurm_request``)."""
    if option.kind == "int":
        auto = option.default is None
        low = (option.low or 0) - auto
        widget = QSpinBox(minimum=low, maximum=100_000)
        widget.setValue(low if auto else option.default)
        if auto:
            widget.setSpecialValueText("auto")
    else:
        widget = QLineEdit()
        several = "; several separated by ;" if option.kind == "append" else ""
        widget.setPlaceholderText(option.help + several)
    widget.setToolTip(f"{option.help} ({option.flag} on the command line)")
    return widget


class SlurmOptions(QGroupBox):
    """One editor per SLURM row of ``core.options``: what the CLI's slurm flags
    set, the same keys for the same submission."""

    def __init__(self) -> None:
        super().__init__("SLURM")
        self.editors: dict[str, QWidget] = {}
        form = QFormLayout(self)
        for option in SLURM:
            self.editors[option.field] = _slurm_editor(option)
            form.addRow(option.label, self.editors[option.field])
        self.setVisible(False)

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for option in SLURM:
            widget = self.editors[option.field]
            if option.kind == "int":
                auto = option.default is None and widget.value() < (option.low or 0)
                out[option.field] = None if auto else widget.value()
            elif option.kind == "append":
                out[option.field] = [
                    s.strip() for s in widget.text().split(";") if s.strip()
                ]
            else:
                out[option.field] = widget.text().strip() or None
        return out


class TrialTable(QTableWidget):
    """One row per trial of the running sweep: the values that vary, its state
    (live from the events, else from the store) and its result."""

    def __init__(self) -> None:
        super().__init__(0, 4)
        self.setHorizontalHeaderLabels(["trial", "values", "state", "result"])
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.Stretch)
        self.verticalHeader().setVisible(False)
        self.setMinimumHeight(100)
        self.trials: dict[int, dict[str, str]] = {}

    def reset(self) -> None:
        self.trials.clear()
        self.setRowCount(0)

    def _state(self, trial: int, state: str = "") -> dict[str, str]:
        return self.trials.setdefault(
            trial, {"values": "", "state": state, "result": ""}
        )

    def follow(self, trial: int, event) -> None:
        """A training event of ``trial``."""
        state = self._state(trial, "running")
        if event.kind == "step":
            state["state"] = f"step {event.step}/{event.total}"
        elif event.kind == "progress" and event.done == 0:
            # before the first step: the memory check says what it turned on
            state["state"] = f"starting training ({event.total} steps)"
            state["note"] = event.message
        elif event.kind == "progress":
            state["state"] = f"evaluating {event.done}/{event.total}"
        self.render()

    def merge(self, rows: list[dict], spec: dict[str, Any] | None) -> None:
        """The store's rows of ``spec``'s sweep."""
        for row in rows:
            if spec is None or row["study"] != spec["name"]:
                continue
            state = self._state(row["trial"])
            state["values"] = point_text(row["params"], spec.get("grid", {}))
            live = state["state"].startswith(("step", "eval", "starting"))
            if row["status"] != "running" or not live:
                state["state"] = {"fail": "failed", "complete": "done"}.get(
                    row["status"], row["status"]
                )
            metric = row["metrics"].get(PRIMARY)
            state["result"] = (
                f"{PRIMARY} {number(metric)}"
                if metric is not None
                else (row.get("error") or "")
            )
        self.render()

    def render(self) -> None:
        self.setRowCount(len(self.trials))
        for i, (trial, state) in enumerate(sorted(self.trials.items())):
            texts = (str(trial), state["values"], state["state"], state["result"])
            for j, text in enumerate(texts):
                item = QTableWidgetItem(text)
                item.setToolTip(state.get("note", "") if j == 2 else "")
                self.setItem(i, j, item)


def point_text(params: dict[str, Any], grid: dict[str, list]) -> str:
    """The values that vary in the sweep (the others are the same for every
    trial), each in its one spelling."""
    varying = [k for k in params if len(grid.get(k, ())) > 1 or k == "seed"]
    return ", ".join(f"{k}={value_text(params[k])}" for k in varying or params)
