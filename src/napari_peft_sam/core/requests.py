"""Typed requests to the model service, one dataclass per operation.

The GUI builds one of these and hands it to ``Session.call``; the service
(``core.service``) runs the function registered for its type. A reader (or a
tool) can follow a request from the widget that builds it to the function
that serves it. Torch-free; arrays travel as numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class Request:
    """Base of every request; ``op`` names the service function."""

    op: ClassVar[str] = ""

    def kwargs(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Catalog(Request):
    """Methods, models, recipes, presets, metrics and devices the pickers offer."""

    op: ClassVar[str] = "catalog"


@dataclass
class DescribeModel(Request):
    """Parameter counts and the memory estimate of a model + method + settings."""

    op: ClassVar[str] = "describe_model"
    model: str
    method: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)  # explicit settings


@dataclass
class InspectData(Request):
    """Images, objects and the split of a data source."""

    op: ClassVar[str] = "inspect_data"
    source: dict[str, Any]
    val_fraction: float = 0.2


@dataclass
class Train(Request):
    """Train, evaluate on the held-out images, record the run (``core.runs.run``).

    ``config`` holds ``data``, ``model``, ``method`` and ``train``: the
    training settings the user set; the rest comes from the model's recipe.
    """

    op: ClassVar[str] = "train"
    config: dict[str, Any]
    run_dir: str
    source: dict[str, Any] | None = None
    storage: str | None = None
    study: str = "gui"


@dataclass
class SetImage(Request):
    """Keep an image for prompting under ``key``."""

    op: ClassVar[str] = "set_image"
    key: str
    image: Any


@dataclass
class Segment(Request):
    """One object's mask from points ((x, y), label 1/0) and an optional box."""

    op: ClassVar[str] = "segment"
    model: dict[str, Any]
    key: str
    points: Any = None
    labels: Any = None
    box: Any = None


@dataclass
class Automatic(Request):
    """Every object of an image: ais with a decoder, amg otherwise."""

    op: ClassVar[str] = "automatic"
    model: dict[str, Any]
    key: str


@dataclass
class Rows(Request):
    """The results store's rows."""

    op: ClassVar[str] = "rows"
    storage: str


@dataclass
class BeforeScores(Request):
    """Each tuned row's base model scored on the run's test set (``core.baseline``)."""

    op: ClassVar[str] = "before_scores"
    rows: list[dict[str, Any]]
    home: str


@dataclass
class RenderTable(Request):
    """Rows as the seed's Markdown table or as CSV."""

    op: ClassVar[str] = "render_table"
    table: list[dict[str, Any]]
    fmt: str = "markdown"


@dataclass
class Sweep(Request):
    """Run a sweep here (with events) or as jobs that are polled."""

    op: ClassVar[str] = "sweep"
    spec: dict[str, Any]
    storage: str
    runs: str
    executor: str = "inline"
    workers: int = 1
    options: dict[str, Any] | None = None


@dataclass
class Export(Request):
    """Export a run (``core.export.export_run``)."""

    op: ClassVar[str] = "export"
    run_dir: str
    fmt: str
    out: str
    tag: str = "best"
    overwrite: bool = False
    decoder: bool = True


@dataclass
class Prepare(Request):
    """Load a model and embed the image ``key`` before the first click."""

    op: ClassVar[str] = "prepare"
    model: dict[str, Any]
    key: str


@dataclass
class AddToSet(Request):
    """Add annotated images to an annotation set (``core.annotations``).

    ``items`` hold ``core.annotations.Item`` fields: ``image``, ``labels``,
    ``name``, ``complete``, ``effort``, ``model``, ``source``.
    """

    op: ClassVar[str] = "add_to_set"
    home: str
    name: str
    items: list[dict[str, Any]]
    held_out_every: int = 4


@dataclass
class Retrain(Request):
    """Train on an annotation set's newest version, evaluate, record
    (``core.retrain``): from ``init_from``'s adapter, else from ``model``."""

    op: ClassVar[str] = "retrain"
    home: str
    name: str
    run_dir: str
    model: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    init_from: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    storage: str | None = None
    study: str = "annotate"
