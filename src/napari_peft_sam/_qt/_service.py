"""The GUI side of the model service: a supervised child process and its jobs."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from multiprocessing.connection import Listener
from typing import Any

from qtpy.QtCore import QObject, Signal

START_TIMEOUT_S = 120.0


class Job(QObject):
    """One request to the service; its signals arrive on the Qt thread."""

    event = Signal(object)
    done = Signal(object)
    failed = Signal(str, bool)  # message, caused by the user's input

    def __init__(self, client: ServiceClient, number: int, request) -> None:
        super().__init__()
        self.client, self.number, self.request = client, number, request
        self.finished = False
        self.result: Any = None
        self.error: str | None = None
        self.arrived = threading.Event()  # set by the reader before it signals
        self.done.connect(self._on_done)
        self.failed.connect(self._on_failed)

    def wait(self, timeout: float) -> bool:
        """Block until the reply has arrived (its signal is then queued), at most
        ``timeout`` seconds; returns whether it arrived."""
        return self.arrived.wait(timeout)

    def stop(self) -> None:
        """Ask the job to finish after its current step (training saves first)."""
        if not self.finished:
            self.client.send((self.number, None))

    def _on_done(self, value) -> None:
        self.finished, self.result = True, value

    def _on_failed(self, message: str, _user: bool) -> None:
        self.finished, self.error = True, message


class ServiceClient(QObject):
    """Starts ``python -m napari_peft_sam.core.service`` and talks to it.

    A reader thread receives replies and re-emits them as Qt signals; the Qt
    thread only ever sends. If the process dies (a segfault, the OOM killer),
    pending jobs fail with one sentence and the next request starts a new one.
    """

    died = Signal(str)

    def __init__(self, name: str = "models") -> None:
        super().__init__()
        self.name = name
        self.generation = 0  # bumps with every (re)start: images must be re-sent
        self._jobs: dict[int, Job] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._conn = None
        self._pending: list[tuple] = []
        self._proc: subprocess.Popen | None = None
        self._closing = False

    # -- public --------------------------------------------------------------------

    def call(self, request, connect=None) -> Job:
        """Send a typed request (``core.requests``); returns its :class:`Job`.

        ``connect(job)`` runs before the request is sent: a slot connected
        after sending could miss a fast reply (the reader thread emits it as
        soon as it arrives).
        """
        with self._lock:
            self._next += 1
            job = Job(self, self._next, request)
            self._jobs[job.number] = job
        if connect is not None:
            connect(job)
        self.send((job.number, request))
        return job

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ensure_running(self) -> int:
        """Start the process if it is not running; returns its generation."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            return self.generation

    def send(self, message: tuple) -> None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            if self._conn is None:
                self._pending.append(message)
                return
            conn = self._conn
        conn.send(message)

    def close(self, timeout: float = 5.0) -> None:
        """End the process: first politely (closing the pipe), then for sure."""
        self._closing = True
        proc, conn = self._proc, self._conn
        if conn is not None:
            conn.close()
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """End the process at once (its jobs fail; files on disk are kept)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    # -- the child process ---------------------------------------------------------

    def _start(self) -> None:
        key = secrets.token_bytes(32)
        # the platform's local transport (a Unix socket, a Windows pipe): no
        # network stack, no Nagle delay on replies that span several sends
        listener = Listener(authkey=key)
        env = dict(os.environ, NAPARI_PEFT_SAM_SERVICE_KEY=key.hex())
        command = [sys.executable, "-m", "napari_peft_sam.core.service"]
        self._proc = subprocess.Popen(
            [*command, "--address", str(listener.address)], env=env
        )
        self._conn, self._closing = None, False
        self.generation += 1
        threading.Thread(
            target=self._read, args=(listener, self._proc), daemon=True
        ).start()

    def _accept(self, listener: Listener, proc: subprocess.Popen):
        from napari_peft_sam.core.service import accept

        return accept(
            listener, lambda: proc.poll() is not None, tries=int(START_TIMEOUT_S)
        )

    def _read(self, listener: Listener, proc: subprocess.Popen) -> None:
        conn = self._accept(listener, proc)
        listener.close()
        if conn is not None:
            with self._lock:
                self._conn = conn
                pending, self._pending = self._pending, []
            for message in pending:
                conn.send(message)
            self._dispatch(conn)
        code = proc.poll() if conn is not None else None
        if code is None and not self._closing:
            proc.kill()
        code = proc.wait()
        with self._lock:
            if self._proc is proc:
                self._conn = None
            jobs = [j for j in self._jobs.values() if not j.finished]
            self._jobs.clear()
            self._pending.clear()
        if self._closing:
            return
        message = (
            f"The {self.name} process ended unexpectedly (exit code {code}); "
            "runs and checkpoints saved so far are kept."
        )
        for job in jobs:
            job.failed.emit(message, False)
        self.died.emit(message)

    def _dispatch(self, conn) -> None:
        while True:
            try:
                number, kind, payload = conn.recv()
            except (EOFError, OSError, TypeError):  # TypeError: closed by close()
                return
            job = self._jobs.get(number)
            if job is None:
                continue
            if kind == "event":
                job.event.emit(payload)
                continue
            with self._lock:
                self._jobs.pop(number, None)
            job.arrived.set()
            if kind == "done":
                job.done.emit(payload)
            else:
                job.failed.emit(*payload)
