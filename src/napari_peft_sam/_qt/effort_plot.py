"""The annotation-effort curve: clicks per object and held-out mSA, round by round.

Round r's clicks are those spent on images annotated with the model of round
r (round 0: the base model); its mSA is that model's held-out single box on
the set's held-out images, recorded by the retrain that made it. The numbers
come from the set's manifest (``core.annotations.curve``); this widget only
paints them.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ..core.annotations import AnnotationSet, curve, list_sets
from ._plots import COLORS, GRID, TEXT, plot_painter
from ._session import session_for

CLICKS, MSA = COLORS[0], COLORS[1]


class CurveCanvas(QWidget):
    """Two series on one round axis: clicks per object (left), mSA 0..1 (right)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.points: list[dict] = []
        self.setMinimumSize(240, 140)

    def set_points(self, points: list[dict]) -> None:
        self.points = points
        self.update()

    def paintEvent(self, _event) -> None:
        painter = plot_painter(self)
        plot = QRectF(44, 22, self.width() - 88, self.height() - 52)
        painter.setPen(QPen(GRID))
        painter.drawRect(plot)
        if not self.points:
            painter.setPen(TEXT)
            painter.drawText(plot, Qt.AlignCenter, "no annotated round yet")
            return
        rounds = [p["round"] for p in self.points]
        last = max(max(rounds), 1)
        clicks = [p["clicks_per_object"] for p in self.points]
        top = max([c for c in clicks if c is not None] + [1.0]) * 1.1

        def at(r: float, value: float, high: float) -> QPointF:
            return QPointF(
                plot.left() + r / last * plot.width(),
                plot.bottom() - value / high * plot.height(),
            )

        self._axes(painter, plot, last, top)
        for key, high, color in (
            ("clicks_per_object", top, CLICKS),
            ("msa", 1.0, MSA),
        ):
            series = [
                at(p["round"], p[key], high) for p in self.points if p[key] is not None
            ]
            painter.setPen(QPen(color, 1.8))
            painter.drawPolyline(QPolygonF(series))
            for point in series:
                painter.drawEllipse(point, 3, 3)

    def _axes(self, painter: QPainter, plot: QRectF, last: int, top: float) -> None:
        painter.setPen(TEXT)
        for r in range(last + 1):
            x = plot.left() + r / last * plot.width()
            painter.drawText(
                QRectF(x - 20, plot.bottom() + 2, 40, 14), Qt.AlignCenter, str(r)
            )
        painter.drawText(
            QRectF(plot.left(), plot.bottom() + 16, plot.width(), 14),
            Qt.AlignCenter,
            "round (0: the base model)",
        )
        for k in range(3):
            y = plot.bottom() - k / 2 * plot.height()
            painter.setPen(CLICKS)
            painter.drawText(
                QRectF(0, y - 8, plot.left() - 4, 16),
                Qt.AlignRight | Qt.AlignVCenter,
                f"{top * k / 2:.1f}",
            )
            painter.setPen(MSA)
            painter.drawText(
                QRectF(plot.right() + 4, y - 8, 40, 16),
                Qt.AlignLeft | Qt.AlignVCenter,
                f"{k / 2:.1f}",
            )
        painter.setPen(CLICKS)
        painter.drawText(QPointF(plot.left() + 6, plot.top() - 6), "clicks per object")
        painter.setPen(MSA)
        painter.drawText(
            QRectF(plot.left(), plot.top() - 20, plot.width() - 4, 16),
            Qt.AlignRight | Qt.AlignVCenter,
            "held-out mSA (single box)",
        )


class EffortPlot(QWidget):
    """Pick an annotation set; see its effort curve. Follows new rows and sets."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.session = session_for(napari_viewer)
        self.sets = QComboBox()
        self.canvas = CurveCanvas()
        self.readout = QLabel()
        self.readout.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(QLabel("annotation set"))
        row.addWidget(self.sets, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.readout)
        self.sets.currentTextChanged.connect(lambda *_: self.draw())
        self.session.results_changed.connect(self.refresh)
        self.refresh()

    def refresh(self, show: str | None = None) -> None:
        """List the sets again (newest choice kept) and redraw."""
        current = show or self.sets.currentText()
        names = list_sets(self.session.home)
        self.sets.blockSignals(True)
        self.sets.clear()
        self.sets.addItems(names)
        if current in names:
            self.sets.setCurrentText(current)
        self.sets.blockSignals(False)
        self.draw()

    def draw(self) -> None:
        name = self.sets.currentText()
        if not name:
            self.canvas.set_points([])
            self.readout.setText(
                "Annotate images in the prompt tester and add them to a set."
            )
            return
        points = curve(AnnotationSet.open(self.session.home, name, create=False))
        self.canvas.set_points(points)
        self.readout.setText(
            " · ".join(
                f"round {p['round']}: "
                + (
                    f"{p['clicks_per_object']:.1f} clicks/object"
                    if p["clicks_per_object"] is not None
                    else "no clicks"
                )
                + (f", mSA {p['msa']:.3f}" if p["msa"] is not None else "")
                for p in points
            )
        )
