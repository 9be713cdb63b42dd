"""The row a run adds to the results store, and how a grid point is keyed.

Torch-free: the store, the tables, the sweep queue and the GUI all read it.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any


def spelled_values(method: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` in their one spelling (``core.knobs.spelled``): a Train run's
    ``['q', 'v']`` and a sweep's ``'q+v'`` both read ``'q+v'``, so that the two
    runs share a table group and a heatmap cell."""
    from .knobs import spelled

    knobs = _knobs(method)
    return {k: spelled(v, knobs.get(k)) for k, v in values.items()}


@functools.lru_cache(maxsize=64)
def _knobs(method: str | None) -> dict:
    from .config import TrainConfig
    from .errors import ConfigError
    from .methods import get_method

    out = {name: knob for name, (knob, _) in TrainConfig.knobs().items()}
    try:
        spec = get_method(str(method))
    except ConfigError:  # a base-model row ("none") or a method since removed
        return out
    return out | {name: knob for name, (knob, _) in spec.config_cls.knobs().items()}


def point_key(point: dict[str, Any]) -> str:
    """A grid point's identity in the store (order-independent)."""
    return repr(sorted((k, point[k]) for k in point))


@dataclass
class RunRecord:
    """The row a run adds to the results store (its trial's user attributes).

    ``params`` are the values that tell this run apart in a table (a sweep's
    grid point; for a single run, the method's hyperparameters and the
    learning rate); ``settings`` every resolved training setting, so that
    tables and heatmaps only compare runs whose other settings match.
    """

    run_dir: str | None
    dataset: str
    model: str
    method: str
    params: dict[str, Any]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    evaluated_on: dict[str, Any] = field(default_factory=dict)
    trainable_parameters: int | None = None
    train_time_s: float | None = None
    peak_memory_mb: float | None = None
    iterations: int | None = None
    status: str = "complete"
    error: str | None = None
    # a retrain on an annotation set: set, version, round and the round's effort
    annotation: dict[str, Any] = field(default_factory=dict)

    def attrs(self) -> dict[str, Any]:
        """The trial's user attributes (``values``/``point`` key the grid point)."""
        values = spelled_values(self.method, self.params)
        # the grid point's key stays as the sweep queued it (``core.worker``)
        return asdict(self) | {
            "params": values,
            "values": values,
            "point": point_key(self.params),
        }


ROW_FIELDS = tuple(RunRecord.__dataclass_fields__)


def row_from_attrs(attrs: dict[str, Any], params: dict | None = None) -> dict[str, Any]:
    """A results-table row from a trial's user attributes."""
    row = {name: attrs.get(name) for name in ROW_FIELDS}
    row["values"] = attrs.get("values") or params or {}
    for name in (
        "values",
        "hyperparameters",
        "settings",
        "metrics",
        "evaluated_on",
        "annotation",
    ):
        row[name] = row[name] or {}
        if not isinstance(row[name], dict):
            _damaged(name, row[name])
    for name, value in row["metrics"].items():
        if value is not None and not isinstance(value, (int, float)):
            _damaged(f"metric {name}", value)
    row["params"] = spelled_values(row["method"], row.pop("values"))
    for name in ("hyperparameters", "settings"):  # rows written before one spelling
        row[name] = spelled_values(row["method"], row[name])
    return row


def _damaged(name: str, value) -> None:
    from .errors import UserError

    raise UserError(
        f"A run in the results store has {name} of the wrong type "
        f"({type(value).__name__}); the store is damaged: restore it from a backup "
        "or report the other studies with --study."
    )
