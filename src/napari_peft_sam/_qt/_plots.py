"""Small painted plots (no plotting library): live curves and a heatmap."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

TEXT = QColor("#d0d4dc")
GRID = QColor("#454a55")
COLORS = [QColor("#5aa9e6"), QColor("#f39c4a"), QColor("#7bd389"), QColor("#e06080")]


def plot_painter(widget: QWidget) -> QPainter:
    """An antialiased painter on ``widget`` with the plots' small font."""
    painter = QPainter(widget)
    painter.setRenderHint(QPainter.Antialiasing)
    font = QFont(painter.font())
    font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
    painter.setFont(font)
    return painter


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 0.01:
        return f"{x:.1e}"
    return f"{x:.3g}"


class CurvePlot(QWidget):
    """Line plot of named series of (x, y) points, redrawn as points arrive."""

    def __init__(self, title: str = "", xlabel: str = "step", parent=None) -> None:
        super().__init__(parent)
        self.title, self.xlabel = title, xlabel
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def clear(self) -> None:
        self.series.clear()
        self.update()

    def add(self, name: str, x: float, y: float) -> None:
        if math.isfinite(y):
            self.series.setdefault(name, []).append((float(x), float(y)))
            self.update()

    def paintEvent(self, _event) -> None:
        painter = plot_painter(self)
        left, top, right, bottom = 52, 18, 10, 30
        plot = QRectF(
            left, top, self.width() - left - right, self.height() - top - bottom
        )
        painter.setPen(TEXT)
        painter.drawText(QRectF(0, 0, self.width(), top), Qt.AlignCenter, self.title)
        points = [p for s in self.series.values() for p in s]
        painter.setPen(QPen(GRID))
        painter.drawRect(plot)
        if not points:
            painter.setPen(TEXT)
            painter.drawText(plot, Qt.AlignCenter, "no data yet")
            return
        x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
        y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
        x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-6)

        def to_screen(x, y):
            return QPointF(
                plot.left() + (x - x0) / (x1 - x0) * plot.width(),
                plot.bottom() - (y - y0) / (y1 - y0) * plot.height(),
            )

        painter.setPen(TEXT)
        for k in range(3):
            y = y0 + (y1 - y0) * k / 2
            p = to_screen(x0, y)
            painter.drawText(
                QRectF(0, p.y() - 8, left - 4, 16),
                Qt.AlignRight | Qt.AlignVCenter,
                _fmt(y),
            )
        painter.drawText(
            QRectF(plot.left(), plot.bottom() + 2, 60, 14), Qt.AlignLeft, _fmt(x0)
        )
        painter.drawText(
            QRectF(plot.right() - 60, plot.bottom() + 2, 60, 14),
            Qt.AlignRight,
            _fmt(x1),
        )
        painter.drawText(
            QRectF(plot.left(), plot.bottom() + 14, plot.width(), 14),
            Qt.AlignCenter,
            self.xlabel,
        )
        legend_x = plot.left() + 6
        for k, (name, series) in enumerate(self.series.items()):
            color = COLORS[k % len(COLORS)]
            painter.setPen(QPen(color, 1.6))
            painter.drawPolyline(QPolygonF([to_screen(x, y) for x, y in series]))
            if len(series) == 1:
                painter.drawEllipse(to_screen(*series[0]), 2.5, 2.5)
            painter.drawText(QPointF(legend_x, plot.top() + 14), name)
            legend_x += painter.fontMetrics().horizontalAdvance(name) + 14


def _viridis(t: float) -> QColor:
    stops = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    t = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    a, b = stops[i], stops[i + 1]
    return QColor(*(round(a[c] + f * (b[c] - a[c])) for c in range(3)))


class Heatmap(QWidget):
    """Renders a ``core.heatmap.HeatmapData``: cell means, ≈ on cells that tie
    with the best, the best outlined, the legend and left-out lines below."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.data = None
        self.x_values: list = []
        self.y_values: list = []
        self.cells: dict = {}
        self.notes: list[str] = []
        self.message = "no finished runs to show"
        self.setMinimumHeight(160)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def set_heatmap(self, data, message: str | None = None) -> None:
        """Show ``data`` (None: only ``message``)."""
        self.data = data
        self.x_values = list(data.x_values) if data else []
        self.y_values = list(data.y_values) if data else []
        self.cells = dict(data.cells) if data else {}
        self.notes = [data.legend, *data.left_out] if data else []
        self.message = message or "no finished runs to show"
        self.setToolTip("\n".join(self.notes))
        self.update()

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setPen(TEXT)
        line = painter.fontMetrics().height()
        left, top = 70, 20
        bottom = 34 + line * len(self.notes)
        area = QRectF(left, top, self.width() - left - 10, self.height() - top - bottom)
        title = self.data.title if self.data else ""
        painter.drawText(QRectF(0, 0, self.width(), top), Qt.AlignCenter, title)
        if not self.cells:
            painter.drawText(area, Qt.AlignCenter | Qt.TextWordWrap, self.message)
            return
        self._paint_cells(painter, area)
        self._paint_axes(painter, area)
        for k, note in enumerate(self.notes):
            rect = QRectF(4, area.bottom() + 32 + k * line, self.width() - 8, line)
            painter.drawText(rect, Qt.AlignLeft | Qt.AlignVCenter, note)

    def _rect(self, area: QRectF, i: int, j: int) -> QRectF:
        nx, ny = len(self.x_values), len(self.y_values)
        w, h = area.width() / nx, area.height() / ny
        return QRectF(area.left() + i * w, area.top() + (ny - 1 - j) * h, w, h)

    def _paint_cells(self, painter: QPainter, area: QRectF) -> None:
        means = [c.mean for c in self.cells.values()]
        lo, hi = min(means), max(means)
        for i, x in enumerate(self.x_values):
            for j, y in enumerate(self.y_values):
                rect, cell = self._rect(area, i, j), self.cells.get((x, y))
                if cell is None:
                    painter.fillRect(rect, QColor("#30343c"))
                    painter.setPen(TEXT)
                    painter.drawText(rect, Qt.AlignCenter, "–")
                    continue
                t = (cell.mean - lo) / (hi - lo) if hi > lo else 0.5
                painter.fillRect(rect, _viridis(t))
                painter.setPen(QColor("black") if t > 0.6 else QColor("white"))
                text = f"{cell.mean:.3f}" + (" ≈" if cell.mark == "tie" else "")
                if cell.n > 1:
                    text += f"\nn={cell.n}"
                painter.drawText(rect, Qt.AlignCenter, text)
                if cell.mark == "best":
                    painter.setPen(QPen(QColor("#ff4040"), 2.5))
                    painter.drawRect(rect.adjusted(1, 1, -1, -1))

    def _paint_axes(self, painter: QPainter, area: QRectF) -> None:
        painter.setPen(TEXT)
        ny, w = len(self.y_values), area.width() / len(self.x_values)
        h = area.height() / ny
        for i, x in enumerate(self.x_values):
            painter.drawText(
                QRectF(area.left() + i * w, area.bottom() + 2, w, 14),
                Qt.AlignCenter,
                _fmt_value(x),
            )
        for j, y in enumerate(self.y_values):
            rect = QRectF(0, area.top() + (ny - 1 - j) * h, area.left() - 6, h)
            painter.drawText(rect, Qt.AlignRight | Qt.AlignVCenter, _fmt_value(y))
        painter.drawText(
            QRectF(area.left(), area.bottom() + 16, area.width(), 14),
            Qt.AlignCenter,
            self.data.x,
        )
        painter.save()
        painter.translate(10, area.center().y())
        painter.rotate(-90)
        painter.drawText(
            QRectF(-area.height() / 2, -8, area.height(), 16),
            Qt.AlignCenter,
            self.data.y,
        )
        painter.restore()


def _fmt_value(v) -> str:
    return _fmt(v) if isinstance(v, float) else str(v)
