"""What the dock widgets of one viewer share: the service, the store, the runs,
and the user's choices.

Widgets never read each other's Qt children: each writes what the user chose
into :class:`Choices` (an evented dataclass) and reads what it needs from
there, connecting to ``choices.events.<field>`` to follow changes.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import evented
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QApplication

from ..core import requests
from ._layout import keep_layout, open_dock
from ._service import Job, ServiceClient
from .run_controller import JobManager

HOME_ENV = "NAPARI_PEFT_SAM_HOME"
_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / "napari-peft-sam")


@evented
@dataclass
class Choices:
    """The current data, model, method and training settings of one viewer.

    ``data`` is the Data widget's choice (``data_widget.DataChoice``);
    ``model`` holds ModelSpec fields; ``method`` a method config dict;
    ``train`` only the training settings the user set (the rest comes from
    the model's recipe, as on the command line).
    """

    data: Any = None
    model: dict[str, Any] = field(default_factory=lambda: {"name": "demo"})
    method: dict[str, Any] = field(default_factory=lambda: {"method": "lora"})
    train: dict[str, Any] = field(default_factory=dict)


@evented
@dataclass
class PromptSession:
    """What the prompt tester is doing, for the widgets that follow it.

    ``model`` is the model being tried (a run folder or a base model name),
    ``image`` the image layer prompted, ``effort`` one ``{"clicks",
    "seconds"}`` per object committed on it (a new tuple on every change, so
    ``events.effort`` fires).
    """

    model: str = "demo"
    image: str | None = None
    effort: tuple = ()


def notify_failure(message: str, user_error: bool) -> None:
    """One sentence for the user; a traceback only when the fault is ours."""
    if user_error:
        show_warning(message)
    else:
        show_error(message)


class Session(QObject):
    """Per viewer: the model service, the results store and the known models.

    ``catalog_ready`` fires once the service has said which methods, models,
    recipes and presets exist; ``results_changed`` whenever a run or sweep adds rows;
    ``models_changed`` when a new run can be picked as a model;
    ``open_run`` asks the prompt tester to load a run folder.
    """

    catalog_ready = Signal(dict)
    results_changed = Signal()
    models_changed = Signal()
    speeds_changed = Signal()
    open_run = Signal(str)

    def __init__(self, viewer, home: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.viewer = viewer
        self.home = Path(home or default_home())
        self.storage = str(self.home / "results.journal")
        self.runs_dir = self.home / "runs"
        self.service = ServiceClient("model service")
        self.service.died.connect(lambda m: show_error(m))
        self.catalog: dict[str, Any] | None = None
        self.runs: list[str] = []  # run folders pickable as models, newest last
        self.speeds: dict[str, dict[str, float]] = {}  # model -> {run: it/s}
        self.choices = Choices()
        self.prompt = PromptSession()  # written by the prompt tester only
        self.jobs = JobManager(
            self
        )  # every child-process job, whichever dock started it
        self._catalog_job = self.call(requests.Catalog(), on_done=self._on_catalog)
        # the service also exits by itself when this process ends (its pipe closes)
        QApplication.instance().aboutToQuit.connect(self.close)

    # -- service ---------------------------------------------------------------------

    def call(
        self, request: requests.Request, on_done=None, on_event=None, on_failed=None
    ) -> Job:
        """A service request with its callbacks; failures become notifications."""

        def connect(job: Job) -> None:
            if on_event is not None:
                job.event.connect(on_event)
            if on_done is not None:
                job.done.connect(on_done)
            job.failed.connect(on_failed or notify_failure)

        return self.service.call(request, connect)

    def _on_catalog(self, catalog: dict) -> None:
        self.catalog = catalog
        self.catalog_ready.emit(catalog)

    def when_ready(self, callback) -> None:
        """Run ``callback(catalog)`` now, or once the catalog has arrived."""
        if self.catalog is not None:
            callback(self.catalog)
        else:
            self.catalog_ready.connect(callback)

    def close(self) -> None:
        self.jobs.close()
        self.service.close(timeout=2.0)

    # -- shared state ----------------------------------------------------------------

    def dock(self, title: str, show: bool = True):
        """The plugin's widget ``title``, docked now if it is not open yet (it
        then fills in its part of :attr:`choices`); raised when ``show``."""
        dock, widget = open_dock(self.viewer, title)
        if show:
            dock.show()
            dock.raise_()
        return widget

    def add_run(self, run_dir: str) -> None:
        if run_dir not in self.runs:
            self.runs.append(run_dir)
            self.models_changed.emit()

    def measured(self, model: str, run: str, it_per_s: float) -> None:
        """A training speed seen here (a live run or a row of the store)."""
        if it_per_s and it_per_s > 0:
            self.speeds.setdefault(model, {})[run] = float(it_per_s)
            self.speeds_changed.emit()

    def speed(self, model: str) -> tuple[float, int] | None:
        """(median iterations per second, how many runs measured it) of ``model``."""
        seen = sorted(self.speeds.get(model, {}).values())
        return (seen[len(seen) // 2], len(seen)) if seen else None

    def info(self, message: str) -> None:
        show_info(message)


def session_for(viewer) -> Session:
    """The session of ``viewer`` (created with the first widget)."""
    viewer = getattr(viewer, "__wrapped__", viewer)  # plugins get a public-only proxy
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session(viewer)
        keep_layout(viewer)  # the plugin's docks in their groups, as they open
    return _SESSIONS[viewer]
