"""What the dock widgets of one viewer share: the service, the store, the runs."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QApplication

from ._service import Job, ServiceClient

HOME_ENV = "NAPARI_PEFT_SAM_HOME"
PLUGIN = "napari-peft-sam"
_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / "napari-peft-sam")


def notify_failure(message: str, user_error: bool) -> None:
    """One sentence for the user; a traceback only when the fault is ours."""
    if user_error:
        show_warning(message)
    else:
        show_error(message)


class Session(QObject):
    """Per viewer: the model service, the results store and the known models.

    ``catalog_ready`` fires once the service has said which methods, models and
    presets exist; ``results_changed`` whenever a run or sweep adds rows;
    ``models_changed`` when a new run can be picked as a model;
    ``open_run`` asks the prompt tester to load a run folder.
    """

    catalog_ready = Signal(dict)
    results_changed = Signal()
    models_changed = Signal()
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
        self.speeds: dict[str, float] = {}
        self.providers: dict[str, Any] = {}  # "data", "model": the widgets' state
        self._catalog_job = self.call("catalog", on_done=self._on_catalog)
        # the service also exits by itself when this process ends (its pipe closes)
        QApplication.instance().aboutToQuit.connect(self.close)

    # -- service ---------------------------------------------------------------------

    def call(
        self, op: str, on_done=None, on_event=None, on_failed=None, **kwargs
    ) -> Job:
        """A service request with its callbacks; failures become notifications."""
        job = self.service.call(op, **kwargs)
        if on_event is not None:
            job.event.connect(on_event)
        if on_done is not None:
            job.done.connect(on_done)
        job.failed.connect(on_failed or notify_failure)
        return job

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
        self.service.close(timeout=2.0)

    # -- shared state ----------------------------------------------------------------

    def provider(self, name: str):
        """The widget that provides ``name`` ("data", "model"), docked if needed."""
        if name not in self.providers:
            title = {"data": "Data", "model": "Model and method"}[name]
            self.viewer.window.add_plugin_dock_widget(PLUGIN, title)
        return self.providers[name]

    def add_run(self, run_dir: str) -> None:
        if run_dir not in self.runs:
            self.runs.append(run_dir)
            self.models_changed.emit()

    def info(self, message: str) -> None:
        show_info(message)


def session_for(viewer) -> Session:
    """The session of ``viewer`` (created with the first widget)."""
    viewer = getattr(viewer, "__wrapped__", viewer)  # plugins get a public-only proxy
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session(viewer)
    return _SESSIONS[viewer]
