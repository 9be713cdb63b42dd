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
)

from ..core.catalog import PRIMARY
from ..core.display import number, value_text


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


class SlurmOptions(QGroupBox):
    """Partition, time, GPUs, memory and setup lines of a SLURM sweep."""

    def __init__(self) -> None:
        super().__init__("SLURM")
        self.partition, self.setup = QLineEdit(), QLineEdit()
        self.partition.setPlaceholderText("default partition")
        self.setup.setPlaceholderText("e.g. module load cuda; source venv/bin/activate")
        self.time_min = QSpinBox(minimum=1, maximum=10_000, value=240)
        # -1 / 0 show "auto": what the partition's nodes offer (executors.slurm_request)
        self.gpus = QSpinBox(minimum=-1, maximum=8, value=-1)
        self.gpus.setSpecialValueText("auto")
        self.mem = QSpinBox(minimum=0, maximum=2048, value=0)
        self.mem.setSpecialValueText("auto")
        form = QFormLayout(self)
        form.addRow("partition", self.partition)
        form.addRow("time limit (min)", self.time_min)
        form.addRow("GPUs per job", self.gpus)
        form.addRow("memory (GB)", self.mem)
        form.addRow("setup", self.setup)
        self.setVisible(False)

    def options(self) -> dict[str, Any]:
        return {
            "partition": self.partition.text().strip() or None,
            "time": self.time_min.value(),
            "gpus": None if self.gpus.value() < 0 else self.gpus.value(),
            "mem": self.mem.value() or None,
            "setup": [s.strip() for s in self.setup.text().split(";") if s.strip()],
        }


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
            live = state["state"].startswith(("step", "eval"))
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
                self.setItem(i, j, QTableWidgetItem(text))


def point_text(params: dict[str, Any], grid: dict[str, list]) -> str:
    """The values that vary in the sweep (the others are the same for every
    trial), each in its one spelling."""
    varying = [k for k in params if len(grid.get(k, ())) > 1 or k == "seed"]
    return ", ".join(f"{k}={value_text(params[k])}" for k in varying or params)
