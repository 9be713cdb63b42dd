"""A form generated from a method's hyperparameters (``MethodConfig.describe()``).

Kinds map to editors: int -> spin box, float -> double spin box, bool -> check
box, choice -> combo box, subset -> a row of check boxes, ints and optional
values -> a line edit. Help text and the valid range are the tooltips; the
service validates the values with the same dataclass the CLI uses.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from ..core.knobs import label

BIG = 1e9


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


class _Subset(QWidget):
    changed = Signal()

    def __init__(self, choices: list[str]) -> None:
        super().__init__()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.boxes = {c: QCheckBox(c) for c in choices}
        for box in self.boxes.values():
            box.toggled.connect(self.changed)
            layout.addWidget(box)

    def value(self) -> list[str]:
        return [c for c, box in self.boxes.items() if box.isChecked()]

    def set_value(self, values) -> None:
        for c, box in self.boxes.items():
            box.setChecked(c in (values or []))


class _Float(QLineEdit):
    """A number that may be tiny (a learning rate of 1e-5) or large: typed as text,
    shown as ``%g``; the service checks the range with the setting's knob."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.textChanged.connect(self.changed)

    def value(self) -> float | str:
        try:
            return float(self.text())
        except ValueError:
            return self.text().strip()  # refused with the knob's sentence

    def setValue(self, number: float) -> None:  # noqa: N802  (Qt's spelling)
        self.setText(f"{float(number):g}")


def editor(spec: dict[str, Any]) -> QWidget:
    """The editor widget of one hyperparameter, set to its default."""
    kind, default = spec["kind"], spec["default"]
    low = spec.get("low")
    high = spec.get("high")
    textual = spec.get("optional") or spec.get("literals") or kind in ("ints", "text")
    if kind == "bool":
        widget = QCheckBox()
    elif kind == "choice":
        widget = QComboBox()
        widget.addItems(spec["choices"])
    elif kind == "subset":
        widget = _Subset(spec["choices"])
    elif textual:
        widget = QLineEdit()
        widget.setPlaceholderText("none" if spec.get("optional") else "")
    elif kind == "int":
        widget = QSpinBox()
        widget.setRange(int(low if low is not None else 0), int(min(high or BIG, BIG)))
    else:
        widget = _Float()
    widget.setToolTip(f"{spec['help']}\nValid: {spec['range']}.")
    set_value(widget, default)
    return widget


def value(widget: QWidget) -> Any:
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QComboBox):
        return widget.currentText()
    if isinstance(widget, _Subset | _Float):
        return widget.value()
    if isinstance(widget, QLineEdit):
        return widget.text().strip() or None
    return widget.value()


def set_value(widget: QWidget, new: Any) -> None:
    if isinstance(widget, QCheckBox):
        widget.setChecked(bool(new))
    elif isinstance(widget, QComboBox):
        widget.setCurrentText(str(new))
    elif isinstance(widget, _Subset):
        widget.set_value(new)
    elif isinstance(widget, _Float):
        widget.setText("" if new is None else f"{float(new):g}")
    elif isinstance(widget, QLineEdit):
        widget.setText(_text(new))
    elif new is not None:
        widget.setValue(new)


def changed_signal(widget: QWidget):
    for name in (
        "changed",
        "toggled",
        "currentTextChanged",
        "textChanged",
        "valueChanged",
    ):
        if hasattr(widget, name):
            return getattr(widget, name)
    raise TypeError(widget)


class KnobForm(QWidget):
    """Editors for every hyperparameter of one method; ``changed`` on any edit."""

    changed = Signal()

    def __init__(self, description: dict[str, Any], parent=None) -> None:
        super().__init__(parent)
        self.method = description["method"]
        self.editors: dict[str, QWidget] = {}
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for spec in description["hyperparameters"]:
            widget = editor(spec)
            changed_signal(widget).connect(self.changed)
            self.editors[spec["name"]] = widget
            layout.addRow(label(spec["name"]), widget)

    def values(self) -> dict[str, Any]:
        """The method config as ``MethodConfig.to_dict`` would give it."""
        return {"method": self.method} | {n: value(w) for n, w in self.editors.items()}

    def set_values(self, values: dict[str, Any]) -> None:
        for name, new in values.items():
            if name in self.editors:
                set_value(self.editors[name], new)
