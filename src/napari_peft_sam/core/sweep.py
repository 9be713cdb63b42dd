"""Sweeps: hyperparameter grids (or a model-based search) on an Optuna study.

The study storage is the one results store: a journal file by default, or any
database URL shared by several machines. Every run is a trial whose user
attributes hold the row of the results table.

Plain Optuna grids are not crash-safe (research/sweep_perf.md): a killed
worker leaves a RUNNING zombie, GridSampler counts failures as done, parallel
workers duplicate the grid's tail, a grown grid reruns everything. Here the
storage itself is the queue instead:

1. ``reconcile`` marks trials of dead workers failed (same host: the process
   is gone; elsewhere: no heartbeat for ``grace_s``) and enqueues every grid
   point that has no COMPLETE, RUNNING or WAITING trial and has failed at most
   ``max_retries`` times;
2. a worker pops a WAITING trial atomically (Optuna's compare-and-set), and if
   a trial with a lower number already runs or finished the same point, it
   yields its copy (PRUNED, marked duplicate) — so each point completes once.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .errors import ConfigError, UserError
from .events import run_to_end

# TrainConfig's fields; every other key of a point is a method hyperparameter
TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
ROW_METRICS = ("ais", "single box", "single point", "ib", "ip", "amg")


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
    metrics: list[str] = field(
        default_factory=lambda: ["single box", "single point", "ib", "ip"]
    )
    eval_split: str = "test"
    eval_images: int | None = None
    primary: str = "single box"
    max_retries: int = 2
    # DataSpec fields (images/labels files) instead of the named ``dataset``
    data: dict[str, Any] | None = None

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

        try:
            return cls.from_dict(yaml.safe_load(Path(path).read_text()))
        except FileNotFoundError:
            raise UserError(f"Sweep spec {path} does not exist.") from None

    def points(self) -> list[dict[str, Any]]:
        """Every grid point, in a stable order, without duplicates."""
        seen, out = set(), []
        for grid in self.grid:
            names = sorted(grid)
            for values in itertools.product(*(grid[n] for n in names)):
                point = dict(zip(names, values, strict=True))
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
        """The RunConfig of one grid point (invalid values raise ConfigError)."""
        from .config import DataSpec, ModelSpec, RunConfig, TrainConfig
        from .methods import make_config

        settings = {**self.fixed, **point}
        dataset = settings.pop("dataset", self.dataset)
        model = settings.pop("model", self.model)
        train = {k: settings.pop(k) for k in list(settings) if k in TRAIN_KEYS}
        return RunConfig(
            DataSpec(**self.data) if self.data else DataSpec(dataset=dataset),
            ModelSpec(model),
            make_config(self.method, settings),
            TrainConfig(**train),
        )

    def validate(self) -> None:
        """Refuse impossible values before anything runs."""
        if not self.grid or not any(self.grid):
            raise ConfigError(f"Sweep {self.name!r} has an empty grid.")
        for grid in self.grid:
            for name, values in grid.items():
                if not isinstance(values, list) or not values:
                    raise ConfigError(
                        f"Sweep grid {name!r} needs a non-empty list of values."
                    )
        for point in self.points():
            self.run_config(point)


def point_key(point: dict[str, Any]) -> str:
    return repr(sorted((k, point[k]) for k in point))


# -- storage -----------------------------------------------------------------------


def open_storage(location: str | Path):
    """A journal file (default) or a database URL as an Optuna storage."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    location = str(location)
    if "://" in location:
        for attempt in range(5):  # workers starting together race to create the schema
            try:
                return RDBStorage(location, engine_kwargs={"pool_pre_ping": True})
            except ImportError:
                raise UserError(
                    f"No database driver for {redact(location)}; pip install 'psycopg[binary]' "
                    "(PostgreSQL) or the driver of your database."
                ) from None
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:  # a torn last line (full disk, power cut)
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                data = path.read_bytes()
                f.truncate(data.rfind(b"\n") + 1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(
        JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    )


def redact(location: str) -> str:
    """A storage location without its password, for cards, logs and tables."""
    if "://" in location and "@" in location:
        scheme, rest = location.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return location


def load_study(storage, name: str, sampler=None, pruner=None):
    import optuna

    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=sampler or optuna.samplers.RandomSampler(seed=0),
        pruner=pruner or optuna.pruners.NopPruner(),
    )


# -- reconcile and claim --------------------------------------------------------------


def _owner_alive(trial, grace_s: float) -> bool:
    host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
    if host == socket.gethostname() and pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        if not trial.user_attrs.get("slurm_job"):
            return True
    beat = trial.user_attrs.get("heartbeat") or trial.datetime_start.timestamp()
    return time.time() - beat < grace_s


def reconcile(study, spec: SweepSpec, grace_s: float = 600.0) -> dict[str, int]:
    """Fail orphaned trials and enqueue every grid point that still needs a run."""
    from optuna.trial import TrialState as S

    for trial in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
        if trial.user_attrs.get("point") and not _owner_alive(trial, grace_s):
            study._storage.set_trial_user_attr(trial._trial_id, "error", "worker lost")
            study._storage.set_trial_user_attr(trial._trial_id, "lost", True)
            study._storage.set_trial_state_values(trial._trial_id, S.FAIL)
    counts = {"queued": 0, "done": 0, "failed": 0}
    by_key: dict[str, list] = {}
    for trial in study.get_trials(deepcopy=False):
        key = trial.user_attrs.get("point")
        if key:
            by_key.setdefault(key, []).append(trial)
    for point in spec.points():
        trials = by_key.get(point_key(point), [])
        states = [t.state for t in trials]
        if S.COMPLETE in states:
            counts["done"] += 1
            continue
        if S.RUNNING in states or S.WAITING in states:
            continue
        failures = sum(
            1 for t in trials if t.state == S.FAIL and not t.user_attrs.get("lost")
        )
        if failures > spec.max_retries:
            counts["failed"] += 1
            continue
        study.enqueue_trial(
            point,
            user_attrs={"point": point_key(point), "values": point},
            skip_if_exists=False,
        )
        counts["queued"] += 1
    return counts


def _is_duplicate(study, trial) -> bool:
    from optuna.trial import TrialState as S

    key = trial.user_attrs.get("point")
    for other in study.get_trials(deepcopy=False, states=(S.RUNNING, S.COMPLETE)):
        if other.number < trial.number and other.user_attrs.get("point") == key:
            return True
    return False


class Heartbeat:
    """Writes a timestamp into the trial every ``interval`` seconds."""

    def __init__(self, study, trial_id: int, interval: float = 30.0) -> None:
        self._stop = threading.Event()

        def beat():
            while not self._stop.wait(interval):
                study._storage.set_trial_user_attr(trial_id, "heartbeat", time.time())

        self._thread = threading.Thread(target=beat, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -- running points -----------------------------------------------------------------------

PointRunner = Callable[..., dict]


class Stopped(Exception):
    """The user stopped the sweep; the point is queued again on resume."""


def run_point(
    spec: SweepSpec,
    point: dict,
    run_dir: Path,
    report=None,
    stop=None,
    on_event=None,
) -> dict:
    """Train and evaluate one grid point; returns the row's values.

    ``stop`` ends the training early (the trial is then left for a resume);
    ``on_event`` sees every training and evaluation event (the GUI's progress).
    """
    from .benchmarks import BENCHMARKS
    from .data import load_dataset
    from .evaluation import evaluate_model
    from .training import train

    config = spec.run_config(point)

    def observe(event):
        if on_event is not None:
            on_event(event)
        if report is not None and event.kind == "validation":
            report(-event.metrics["val_box_loss"], event.step)

    result = run_to_end(train(config, run_dir, stop=stop), observe)
    if result.stopped and stop is not None and stop.is_set():
        raise Stopped(f"stopped at step {result.steps}")
    data = config.data
    if data.dataset in BENCHMARKS:
        dataset = load_dataset(data.dataset, split=spec.eval_split)
    else:
        dataset = load_dataset(
            data.dataset,
            data.images,
            data.labels,
            data.image_key,
            data.label_key,
            data.stack,
        )
        dataset = dataset.split(data.val_fraction, data.split_seed)[1]
    if spec.eval_images:
        from .data import Dataset

        dataset = Dataset(list(dataset)[: spec.eval_images], dataset.source)
    events = evaluate_model(
        dataset, spec.metrics, run_dir=run_dir, device=config.train.device
    )
    evaluation = run_to_end(events, on_event)
    from .checkpoints import read_card

    card = read_card(run_dir)
    return {
        "metrics": evaluation.metrics,
        "trainable_parameters": card["trainable_parameters"],
        "train_time_s": result.train_time_s,
        "peak_memory_mb": result.peak_memory_mb,
        "iterations": result.steps,
    }


def _execute(
    study, trial, spec: SweepSpec, runs_root: Path, runner: PointRunner, report
):
    import optuna

    point = trial.user_attrs.get("values")
    if point is None:  # a search trial: the sampler picks the values
        point = {
            n: trial.suggest_categorical(n, spec.choices(n)) for n in spec.param_names()
        }
        trial.set_user_attr("values", point)
        trial.set_user_attr("point", point_key(point))
    # Grid points stay user attributes, not Optuna params: Optuna fixes a
    # parameter's choices per study, and a grown grid must reuse the study.
    run_dir = runs_root / f"{spec.name}-t{trial.number:04d}"
    config = spec.run_config(point)
    for key, value in {
        "run_dir": str(run_dir),
        "dataset": config.data.dataset or spec.dataset,
        "model": config.model.name,
        "method": spec.method,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "heartbeat": time.time(),
        "hyperparameters": config.method.to_dict() | {"lr": config.train.lr},
    }.items():
        trial.set_user_attr(key, value)
    with Heartbeat(study, trial._trial_id):
        row = runner(spec, point, run_dir, report)
    for key, value in row.items():
        trial.set_user_attr(key, value)
    value = row["metrics"].get(spec.primary)
    if value is None:
        raise optuna.TrialPruned(f"{spec.primary} was not computed")
    return float(value)


def run_worker(
    storage: str,
    spec: SweepSpec,
    runs_root: str | Path,
    grace_s: float = 600.0,
    runner: PointRunner = run_point,
    max_points: int | None = None,
    stop=None,
    on_event=None,
) -> int:
    """Run grid points until none is left; returns how many this worker ran.

    ``stop`` (anything with ``is_set()``) ends the worker after the current
    step; the interrupted point is queued again by the next ``reconcile``.
    ``on_event(trial_number, event)`` sees the events of every point.
    """
    import optuna
    from optuna.trial import TrialState as S

    study = load_study(open_storage(storage), spec.name)
    study.set_user_attr("spec", {**spec.__dict__})
    runs_root, ran = Path(runs_root), 0
    if stop is not None or on_event is not None:
        runner = _observed(runner, stop, on_event)
    while (max_points is None or ran < max_points) and not (stop and stop.is_set()):
        reconcile(study, spec, grace_s)
        if not any(t.state == S.WAITING for t in study.get_trials(deepcopy=False)):
            return ran
        trial = study.ask()
        if trial.user_attrs.get("point") is None or _is_duplicate(study, trial):
            trial.set_user_attr("duplicate", True)
            study.tell(trial, state=S.PRUNED)
            continue
        try:
            value = _execute(study, trial, spec, runs_root, runner, None)
        except optuna.TrialPruned as reason:
            trial.set_user_attr("error", str(reason))
            study.tell(trial, state=S.PRUNED)
        except Stopped as reason:
            trial.set_user_attr("error", str(reason))
            trial.set_user_attr("lost", True)  # not a failure: resume reruns it
            study.tell(trial, state=S.FAIL)
            return ran
        except Exception as error:  # a failing point must not stop the sweep
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            trial.set_user_attr("traceback", traceback.format_exc()[-2000:])
            study.tell(trial, state=S.FAIL)
        else:
            study.tell(trial, value)
        ran += 1
    return ran


def _observed(runner: PointRunner, stop, on_event) -> PointRunner:
    """``runner`` with the stop flag and the event callback of one worker."""

    def run(spec, point, run_dir, report):
        number = int(Path(run_dir).name.rsplit("-t", 1)[-1])
        forward = None if on_event is None else lambda e: on_event(number, e)
        return runner(spec, point, run_dir, report, stop=stop, on_event=forward)

    return run


def run_search(
    storage: str,
    spec: SweepSpec,
    n_trials: int,
    runs_root: str | Path,
    runner: PointRunner = run_point,
    seed: int = 0,
) -> Any:
    """A model-based search (TPE) with successive-halving pruning.

    Trials report the negative validation box loss at every validation step;
    unpromising ones stop early. Returns the study (its trials hold the rows).
    """
    import optuna

    space = "-".join(f"{n}{len(spec.choices(n))}" for n in spec.param_names())
    study = load_study(
        open_storage(storage),
        f"{spec.name}-search-{space}",
        sampler=optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=max(2, n_trials // 4)
        ),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=2
        ),
    )

    def objective(trial):
        def report(value, step):
            trial.report(value, step)
            trial.set_user_attr("iterations", step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        return _execute(study, trial, spec, Path(runs_root), runner, report)

    study.optimize(objective, n_trials=n_trials, catch=(RuntimeError, UserError))
    return study


def record_run(
    storage: str, study_name: str, params: dict, row: dict, attrs: dict | None = None
) -> int:
    """Add a finished run (a single training, or a base-model reference) as a trial."""
    import optuna

    study = load_study(open_storage(storage), study_name)
    value = next((v for v in row.get("metrics", {}).values() if v is not None), None)
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE,
        value=0.0 if value is None else float(value),
        user_attrs={
            "values": params,
            "point": point_key(params),
            **(attrs or {}),
            **row,
        },
    )
    study.add_trial(trial)
    return len(study.trials) - 1
