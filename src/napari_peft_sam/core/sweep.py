"""Sweep specs: a base configuration and the values to vary (grids of the study).

A :class:`SweepSpec` expands into grid points (times training seeds); each
point becomes a trial of the spec's study in the results store
(``core.store``), run by sweep workers (``core.worker``) in this process, as
local processes or as SLURM jobs (``core.executors``).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import catalog
from .config import TrainConfig
from .errors import ConfigError, UserError
from .records import point_key

# TrainConfig's fields; every other key of a point is a method hyperparameter
TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


@dataclass
class SweepSpec:
    """What a sweep runs: one base configuration and the values to vary.

    ``grid`` maps a hyperparameter to its values; a list of such maps is the
    union of their products. Keys are method hyperparameters, training
    settings (``lr``, ``iterations``, ...), or ``dataset`` / ``model``.
    """

    name: str
    dataset: str
    model: str
    method: str
    grid: list[dict[str, list]]
    fixed: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(catalog.PROMPT))
    eval_split: str = "test"  # of a benchmark dataset
    eval_images: int | None = None
    primary: str = catalog.PRIMARY
    max_retries: int = 2
    # DataSpec fields (images/labels files) instead of the named ``dataset``
    data: dict[str, Any] | None = None
    seeds: int = 1  # training seeds per grid point, each its own trial

    @classmethod
    def from_dict(cls, values: dict) -> SweepSpec:
        values = dict(values)
        grid = values.get("grid", {})
        values["grid"] = grid if isinstance(grid, list) else [grid]
        try:
            spec = cls(**values)
        except TypeError as error:
            raise ConfigError(
                f"Sweep spec has an unknown or missing field ({error})."
            ) from None
        spec.validate()
        return spec

    @classmethod
    def load(cls, path: str | Path) -> SweepSpec:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise UserError(f"Sweep spec {path} does not exist or is not a file.")
        try:
            values = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            where = getattr(error, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise UserError(f"Sweep spec {path} is not valid YAML{line}.") from None
        if not isinstance(values, dict):
            raise UserError(
                f"Sweep spec {path} must be a mapping (name:, dataset:, model:, "
                f"method:, grid:), not a {type(values).__name__}."
            )
        return cls.from_dict(values)

    def points(self) -> list[dict[str, Any]]:
        """Every grid point (times every seed), in a stable order, once each.

        With ``seeds`` > 1 each point carries its training ``seed`` 0..N-1;
        the data split stays the same for all of them.
        """
        seen, out = set(), []
        seeds = [{"seed": s} for s in range(self.seeds)] if self.seeds > 1 else [{}]
        for grid in self.grid:
            names = sorted(grid)
            for values in itertools.product(*(grid[n] for n in names)):
                for seed in seeds:
                    point = dict(zip(names, values, strict=True)) | seed
                    key = point_key(point)
                    if key not in seen:
                        seen.add(key)
                        out.append(point)
        return out

    def param_names(self) -> list[str]:
        return sorted({name for grid in self.grid for name in grid})

    def choices(self, name: str) -> list:
        values = []
        for grid in self.grid:
            for v in grid.get(name, []):
                if v not in values:
                    values.append(v)
        return values

    def run_config(self, point: dict[str, Any]):
        """The RunConfig of one grid point (invalid values raise ConfigError).

        The spec's fixed settings and the point are explicit; every other
        training setting comes from the base model's recipe.
        """
        from .config import DataSpec, ModelSpec, RunConfig
        from .methods import make_config
        from .recipes import resolve

        settings = {**self.fixed, **point}
        dataset = settings.pop("dataset", self.dataset)
        model = settings.pop("model", self.model)
        train = {k: settings.pop(k) for k in list(settings) if k in TRAIN_KEYS}
        train_config, sources = resolve(train, model)
        return RunConfig(
            DataSpec(**self.data) if self.data else DataSpec(dataset=dataset),
            ModelSpec(model),
            make_config(self.method, settings),
            train_config,
            sources,
        )

    def validate(self) -> None:
        """Refuse impossible values before anything runs."""
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", str(self.name)):
            raise ConfigError(
                f"Sweep name {self.name!r} may hold only letters, digits, '_', '.' "
                "and '-' (it names folders)."
            )
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(
                f"Sweep seeds must be a whole number >= 1, got {self.seeds!r}."
            )
        for name in [*self.metrics, self.primary]:
            catalog.get(name)
        if not self.grid or not any(self.grid):
            raise ConfigError(f"Sweep {self.name!r} has an empty grid.")
        for grid in self.grid:
            for name, values in grid.items():
                if not isinstance(values, list) or not values:
                    raise ConfigError(
                        f"Sweep grid {name!r} needs a non-empty list of values."
                    )
        for point in self.points():
            _check_names(self.run_config(point))


def _check_names(config) -> None:
    """Refuse an unknown dataset or base model before a worker starts."""
    from .benchmarks import BENCHMARKS
    from .models import architecture_of
    from .sources import SAMPLE_DOMAINS

    name = config.data.dataset
    if name is not None and name not in (*SAMPLE_DOMAINS, *BENCHMARKS):
        known = ", ".join([*SAMPLE_DOMAINS, *BENCHMARKS])
        raise ConfigError(
            f"Unknown dataset {name!r} in the sweep; choose one of {known}."
        )
    architecture_of(config.model.name)
