"""Jobs: every child-process job of this viewer, with progress and Stop.

It lists what the session's :class:`~.run_controller.JobManager` holds, so a
job started from a dock that was closed since can still be followed and
stopped here.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._session import session_for
from .run_controller import RunController


class JobsWidget(QWidget):
    """Every job of this viewer with its progress, state and a Stop button."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.session = session_for(napari_viewer)
        # the job's name over its state (step, loss, speed, time left) in one
        # wrapped cell: the list stays readable in the ~450 px that Results
        # leaves it at the bottom of a 1920 px window
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["job", "progress", ""])
        self.table.setWordWrap(True)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setMinimumHeight(90)
        self.empty = QLabel("No job yet: Train, Retrain and Sweep runs appear here.")
        self.empty.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.empty)
        layout.addWidget(self.table)
        self.rows: list[tuple[RunController, QProgressBar, QPushButton]] = []
        for job in self.session.jobs.jobs:
            self._add(job)
        self.session.jobs.added.connect(self._add)

    def _add(self, job: RunController) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        bar = QProgressBar()
        bar.setFormat("%v / %m")
        stop = QPushButton("Stop")
        stop.clicked.connect(job.stop)
        self.table.setCellWidget(row, 1, bar)
        self.table.setCellWidget(row, 2, stop)
        self.rows.append((job, bar, stop))
        job.changed.connect(self._update)
        self.empty.setVisible(False)
        self._update()

    def _update(self) -> None:
        for row, (job, bar, stop) in enumerate(self.rows):
            if job.total:
                bar.setRange(0, job.total)
                bar.setValue(job.step)
            elif job.running:
                bar.setRange(0, 0)  # busy until the first step says how many
            else:
                bar.setRange(0, 1)
                bar.setValue(1 if job.state == "finished" else 0)
            cell = QTableWidgetItem(f"{job.title}\n{job.line}")
            cell.setToolTip(cell.text())
            self.table.setItem(row, 0, cell)
            stop.setEnabled(job.running and job.state != "stopping")
