"""The forms generated from described settings: a method's hyperparameters
(``MethodConfig.describe()``, the Model widget) and the training settings
(``TrainConfig.describe()``, the Train widget).

Kinds map to editors: int -> spin box, float -> a line edit shown as ``%g``,
bool -> check box, choice -> combo box, subset -> a row of check boxes, ints
and optional values -> a line edit. Help text and the valid range are the tooltips; the
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
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

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
    """The one form generator: an editor per described setting (a method's
    hyperparameters, ``TrainConfig.describe()``), ``advanced`` ones folded
    away; ``changed`` on every edit the user makes.

    A field the user edits is explicit (``edited``); with ``mark_edits`` its
    label turns bold and :meth:`show_values` (another model's recipe) leaves
    it as it is. :meth:`explicit` is what the command line's flags would carry.
    """

    changed = Signal()

    def __init__(self, specs: list[dict[str, Any]], mark_edits: bool = False) -> None:
        super().__init__()
        self.editors: dict[str, QWidget] = {}
        self.labels: dict[str, QLabel] = {}
        self.edited: set[str] = set()
        self._loading, self._mark = False, mark_edits
        basic, advanced = QFormLayout(), QFormLayout()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(basic)
        if any(spec["advanced"] for spec in specs):
            fold, inner = QCollapsible("advanced settings"), QWidget()
            inner.setLayout(advanced)
            fold.addWidget(inner)
            layout.addWidget(fold)
        for spec in specs:
            name, widget = spec["name"], editor(spec)
            self.editors[name] = widget
            self.labels[name] = QLabel(label(name), toolTip=widget.toolTip())
            (advanced if spec["advanced"] else basic).addRow(self.labels[name], widget)
            changed_signal(widget).connect(lambda *_, n=name: self._edited(n))

    def _edited(self, name: str) -> None:
        if self._loading:
            return
        self.edited.add(name)
        if self._mark:
            font = self.labels[name].font()
            font.setBold(True)
            self.labels[name].setFont(font)
        self.changed.emit()

    def values(self) -> dict[str, Any]:
        """Every field's value (a method config as ``to_dict`` gives it, less
        ``method``)."""
        return {name: value(widget) for name, widget in self.editors.items()}

    def explicit(self) -> dict[str, Any]:
        """The fields the user set (the rest comes from the model's recipe)."""
        return {name: value(self.editors[name]) for name in sorted(self.edited)}

    def show_values(self, values: dict[str, Any]) -> None:
        """Display ``values`` in every field the user has not edited."""
        self._loading = True
        try:
            for name, widget in self.editors.items():
                if name not in self.edited and name in values:
                    set_value(widget, values[name])
        finally:
            self._loading = False

    def reset(self) -> None:
        """Forget the user's edits (the caller shows the recipe again)."""
        for name in self.edited:
            self.labels[name].setFont(QLabel().font())
        self.edited.clear()
        self.changed.emit()
