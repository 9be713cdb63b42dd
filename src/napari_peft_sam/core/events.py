"""Events that training, evaluation and sweeps emit; torch-free and JSON-ready.

The CLI prints them, the GUI renders them, ``events.jsonl`` stores them.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class StepEvent:
    step: int
    total: int
    loss: float
    mask_loss: float
    iou_loss: float
    lr: float
    it_per_s: float
    eta_s: float
    kind: str = "step"


@dataclass(frozen=True)
class ValidationEvent:
    step: int
    metrics: dict[str, float]
    best: bool
    kind: str = "validation"


@dataclass(frozen=True)
class CheckpointEvent:
    step: int
    path: str
    tag: str
    kind: str = "checkpoint"


@dataclass(frozen=True)
class ProgressEvent:
    """Progress of evaluation or a sweep: ``done`` of ``total`` units."""

    done: int
    total: int
    message: str = ""
    kind: str = "progress"


@dataclass(frozen=True)
class TrainResult:
    run_dir: str
    steps: int
    stopped: bool
    best_metric: float | None
    train_time_s: float
    peak_memory_mb: float | None
    reason: str = "finished"
    kind: str = "result"
    metrics: dict[str, Any] = field(default_factory=dict)


Event = StepEvent | ValidationEvent | CheckpointEvent | ProgressEvent | TrainResult


def to_dict(event: Event) -> dict[str, Any]:
    return asdict(event)


def run_to_end(generator, on_event=None):
    """Drain an event generator (training, evaluation), returning its result.

    ``on_event`` sees every event on the way (a progress printer, a pruner).
    """
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class StopToken:
    """A thread-safe request to finish after the current step.

    Training checks ``is_set()`` every step, saves a consistent checkpoint and
    returns normally. Any object with ``is_set()`` works in its place (a
    ``multiprocessing.Event`` for a child process).
    """

    def __init__(self) -> None:
        self._flag = threading.Event()

    def stop(self) -> None:
        self._flag.set()

    def is_set(self) -> bool:
        return self._flag.is_set()
