"""Every child-process job of one viewer: one controller each, one manager, one list.

A :class:`RunController` owns one job in a process of its own (a training, a
retrain, a sweep): it starts it, follows its events into a progress and a
status line, stops it and closes the process. The :class:`JobManager` (one per
viewer, held by the session, not by a dock) keeps every controller, so a job
outlives the dock that started it, and lets one training-type job run at a
time. ``jobs_widget.JobsWidget`` lists them with progress and Stop.
"""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_warning
from qtpy.QtCore import QObject, Signal

from ..core.display import duration
from ._service import ServiceClient


class RunController(QObject):
    """One job in its own child process: start, progress, Stop, end.

    Widgets connect to ``event``, ``done`` and ``failed`` as they would to a
    service job; ``changed`` fires whenever :attr:`line` or the progress moves.
    The process is closed when the job ends, whoever is listening.
    """

    event = Signal(object)
    done = Signal(object)
    failed = Signal(str, bool)
    changed = Signal()

    def __init__(self, title: str, request, training: bool = True) -> None:
        super().__init__()
        self.title, self.request, self.training = title, request, training
        self.process: ServiceClient | None = None
        self.job = None
        self.step, self.total = 0, 0
        self.line = "starting…"
        self.state = "starting"  # running, stopping, finished, stopped, failed
        self.result: dict[str, Any] | None = None

    def start(self) -> None:
        self.process = ServiceClient(f"{self.title} process")

        def connect(job) -> None:
            job.event.connect(self._on_event)
            job.done.connect(self._on_done)
            job.failed.connect(self._on_failed)

        self.job = self.process.call(self.request, connect)
        self.state = "running"

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.finished

    def stop(self) -> None:
        """Finish after the current step; the checkpoint stays usable."""
        if self.running and self.state != "stopping":
            self.job.stop()
            self.state, self.line = "stopping", "stopping after this step…"
            self.changed.emit()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def _on_event(self, event) -> None:
        kind = getattr(event, "kind", None)
        if kind == "step":
            self.step, self.total = event.step, event.total
            if self.state != "stopping":
                self.line = (
                    f"step {event.step}/{event.total} · loss {event.loss:.4f} · "
                    f"{event.it_per_s:.2f} it/s · {duration(event.eta_s)} left"
                )
        elif kind == "progress" and event.done and self.state != "stopping":
            self.line = f"evaluating {event.done}/{event.total}"
        elif isinstance(event, dict) and "jobs" in event:  # a sweep's executor
            self.line = f"jobs: {', '.join(event['jobs'])}"
        elif isinstance(event, dict) and "trial" in event:
            inner = event["event"]
            if getattr(inner, "kind", None) == "step":
                self.line = f"trial {event['trial']}: step {inner.step}/{inner.total}"
        self.event.emit(event)
        self.changed.emit()

    def _end(self, state: str, line: str) -> None:
        self.state, self.line = state, line
        if self.process is not None:
            self.process.close()

    def _on_done(self, result) -> None:
        self.result = result
        stopped = isinstance(result, dict) and (
            result.get("status") == "stopped"
            or result.get("stopped")
            or result.get("cancelled")
        )
        self._end(
            "stopped" if stopped else "finished", "stopped" if stopped else "done"
        )
        self.done.emit(result)
        self.changed.emit()

    def _on_failed(self, message: str, user_error: bool) -> None:
        self._end("failed", f"failed: {message.splitlines()[0]}")
        self.failed.emit(message, user_error)
        self.changed.emit()


class RunOwner:
    """A dock that starts jobs (Train, Sweep): its last job's controller in
    ``run``, and what the dock and tests ask of that job.

    :meth:`start_job` starts a request through the viewer's job manager and
    follows it with the dock's ``_on_event``, ``_on_done`` and ``_on_failed``.
    """

    run: RunController | None = None

    @property
    def running(self) -> bool:
        return self.run is not None and self.run.running

    @property
    def process(self) -> ServiceClient | None:
        return None if self.run is None else self.run.process

    @property
    def job(self):
        return None if self.run is None else self.run.job

    def start_job(self, title: str, request) -> RunController | None:
        """The started job's controller; None when another training-type job
        runs (the manager has said so)."""
        run = self.session.jobs.start(title, request)
        if run is not None:
            self.run = run
            run.event.connect(self._on_event)
            run.done.connect(self._on_done)
            run.failed.connect(self._on_failed)
        return run


class JobManager(QObject):
    """The jobs of one viewer; at most one training-type job runs at a time."""

    added = Signal(object)

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session
        self.jobs: list[RunController] = []

    def running(self, training: bool | None = None) -> list[RunController]:
        return [
            j
            for j in self.jobs
            if j.running and (training is None or j.training == training)
        ]

    def start(self, title: str, request, training: bool = True) -> RunController | None:
        """Start ``request`` in a process of its own; None (with a notification)
        while another training-type job runs."""
        busy = self.running(training=True) if training else []
        if busy:
            show_warning(
                f"{busy[0].title} is still running: stop it in the Jobs list or wait "
                f"for it to finish before starting {title}."
            )
            return None
        controller = RunController(title, request, training)
        self.jobs.append(controller)
        controller.start()
        self.added.emit(controller)
        try:
            self.session.dock("Jobs")
        except Exception as error:  # noqa: BLE001 - the list is a convenience
            show_warning(f"The Jobs list could not be opened: {error}")
        return controller

    def close(self) -> None:
        for job in self.jobs:
            if job.running:
                job.kill()
