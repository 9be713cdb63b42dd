"""Terminal rendering of training events: a bar with ETA on a TTY, lines otherwise."""

from __future__ import annotations

import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressPrinter:
    """Print StepEvent / ValidationEvent / CheckpointEvent objects."""

    def __init__(self, stream: TextIO, width: int = 28, every_s: float = 5.0) -> None:
        self.stream, self.width, self.every_s = stream, width, every_s
        self.tty = stream.isatty()
        self._last = 0.0
        self._open_line = False

    def show(self, event) -> None:
        kind = getattr(event, "kind", "")
        if kind == "step":
            self._step(event)
        elif kind == "validation":
            metrics = " ".join(f"{k} {v:.4f}" for k, v in event.metrics.items())
            self._line(f"step {event.step}: {metrics}{' (best)' if event.best else ''}")
        elif kind == "progress" and event.done == 0:  # a note before the first step
            self._line(event.message)
        elif kind == "progress":
            self._line(f"{event.done}/{event.total} {event.message}")

    def _step(self, e) -> None:
        text = (
            f"{e.step}/{e.total} loss {e.loss:.4f} lr {e.lr:.2e} "
            f"{e.it_per_s:.2f} it/s ETA {_clock(e.eta_s)}"
        )
        if self.tty:
            filled = int(self.width * e.step / max(e.total, 1))
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {text}\033[K")
            self.stream.flush()
            self._open_line = True
        elif time.monotonic() - self._last >= self.every_s or e.step == e.total:
            self._last = time.monotonic()
            self._line(text)

    def _line(self, text: str) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
