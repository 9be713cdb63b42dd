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
# the most points (grid points times seeds) one spec may hold: larger grids
# are refused before anything is expanded or written
MAX_POINTS = 10_000
# fields that do not change what a point computes: the study's name, which
# points exist (a grown grid or more seeds reuse the finished points) and how
# often a failing point is retried
NOT_FINGERPRINTED = ("name", "grid", "seeds", "max_retries")


def fingerprint(spec: SweepSpec) -> str:
    """A hash of everything in ``spec`` that decides a point's result.

    Stored with the study: a sweep name reused with another dataset, model,
    method, fixed settings or metrics would otherwise mix their results.
    """
    import hashlib
    import json

    canonical = {
        k: v for k, v in sorted(spec.__dict__.items()) if k not in NOT_FINGERPRINTED
    }
    text = json.dumps(canonical, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_reuse(location, name: str, spec: SweepSpec) -> None:
    """Refuse, before anything is written, a study ``name`` of another spec."""
    from .store import is_url, open_storage, open_study, redact, study_names

    if not is_url(location) and not Path(location).is_file():
        return
    storage = open_storage(location)
    if name in study_names(storage):
        claim(open_study(storage, name), spec, redact(location), write=False)


def claim(study, spec: SweepSpec, storage="the store", write: bool = True) -> None:
    """Tie ``study`` to ``spec``'s fingerprint; refuse one made by another spec."""
    mine = fingerprint(spec)
    theirs = study.user_attrs.get("fingerprint")
    if theirs is None and write:
        study.set_user_attr("fingerprint", mine)
    elif theirs is not None and theirs != mine:
        raise UserError(
            f"Sweep {study.study_name!r} in {storage} was run with another spec "
            "(dataset, model, method, fixed settings or metrics differ); pick a new "
            "name with `sweep --name NEW` or another --storage."
        )


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

    def size(self) -> int:
        """How many points (times seeds) the grid holds, without expanding it."""
        import math

        seeds = self.seeds if isinstance(self.seeds, int) else 1
        return seeds * sum(math.prod(len(v) for v in g.values()) for g in self.grid)

    def validate(self) -> None:
        """Refuse impossible values before anything runs."""
        import re

        self._check_types()

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", str(self.name)):
            raise ConfigError(
                f"Sweep name {self.name!r} may hold only letters, digits, '_', '.' "
                "and '-' (it names folders)."
            )
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(
                f"Sweep seeds must be a whole number >= 1, got {self.seeds!r}."
            )
        self.metrics = catalog.parse(self.metrics)
        catalog.get(self.primary)
        if self.primary not in self.metrics:
            raise ConfigError(
                f"Sweep primary metric {self.primary!r} is not among its metrics "
                f"({', '.join(self.metrics)}); add it to metrics: or choose another "
                "primary:."
            )
        if not self.grid or not any(self.grid):
            raise ConfigError(f"Sweep {self.name!r} has an empty grid.")
        for grid in self.grid:
            for name, values in grid.items():
                if not isinstance(values, list) or not values:
                    raise ConfigError(
                        f"Sweep grid {name!r} needs a non-empty list of values."
                    )
        if self.size() > MAX_POINTS:
            raise ConfigError(
                f"Sweep {self.name!r} has {self.size():,} points (grid times seeds), "
                f"more than the limit of {MAX_POINTS:,}; split it into smaller sweeps "
                "or use --search N."
            )
        for point in self.points():
            _check_names(self.run_config(point))

    def _check_types(self) -> None:
        """Refuse spec fields of the wrong type with a sentence naming the field."""
        expected = {
            "dataset": (str,),
            "model": (str,),
            "method": (str,),
            "fixed": (dict,),
            "metrics": (list, str),
            "eval_split": (str,),
            "eval_images": (int, type(None)),
            "primary": (str,),
            "max_retries": (int,),
            "data": (dict, type(None)),
            "seeds": (int,),
        }
        words = {dict: "a mapping", list: "a list", str: "text", int: "a whole number"}
        for name, kinds in expected.items():
            value = getattr(self, name)
            if not isinstance(value, kinds) or isinstance(value, bool):
                want = " or ".join(words.get(k, "empty") for k in kinds)
                raise ConfigError(
                    f"Sweep field {name!r} must be {want}, not {value!r:.60}."
                )
        if self.max_retries < 0 or (
            self.eval_images is not None and self.eval_images < 1
        ):
            raise ConfigError("Sweep max_retries must be >= 0 and eval_images >= 1.")
        if not all(isinstance(g, dict) for g in self.grid):
            raise ConfigError(
                "Sweep grid must be a mapping of names to lists of values, or a list of such mappings."
            )


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
