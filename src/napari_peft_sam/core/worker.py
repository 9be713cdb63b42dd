"""Sweep workers: the results store is the queue of a sweep's grid points.

Plain Optuna grids are not crash-safe (research/sweep_perf.md): a killed
worker leaves a RUNNING zombie, GridSampler counts failures as done, parallel
workers duplicate the grid's tail, a grown grid reruns everything. Here the
storage itself is the queue instead:

1. ``reconcile`` marks trials of dead workers failed (their lease, the
   heartbeat, is older than ``grace_s``; on the same host also at once when
   the process is gone or its pid names another process) and enqueues every grid
   point that has no COMPLETE, RUNNING or WAITING trial and has failed at most
   ``max_retries`` times;
2. a worker pops a WAITING trial atomically (Optuna's compare-and-set), and if
   a trial with a lower number already runs or finished the same point, it
   yields its copy (PRUNED, marked duplicate) — so each point completes once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .events import run_to_end
from .records import point_key
from .store import database_error, open_storage, open_study, redact
from .sweep import SweepSpec, claim

# -- reconcile and claim --------------------------------------------------------------


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), or None.

    A pid alone does not name a process: pids are reused, and inside a PID
    namespace (a container) the worker may be pid 1, which always exists.
    """
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _owner_alive(trial, grace_s: float) -> bool:
    """Whether the worker of a RUNNING trial still holds it.

    The worker renews a lease (the ``heartbeat`` timestamp) every 30 s; a
    lease older than ``grace_s`` means the worker is gone, whatever its pid
    says. On the same host a vanished or reused pid (another start time)
    frees the point at once.
    """
    host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
    if host == socket.gethostname() and pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        started = trial.user_attrs.get("pid_start")
        if started is not None and process_start(int(pid)) not in (None, started):
            return False
    beat = trial.user_attrs.get("heartbeat") or trial.datetime_start.timestamp()
    return time.time() - beat < grace_s


def _mark_lost(storage, study, trial) -> None:
    """Fail a trial whose worker died, saying so.

    Optuna has no public call that changes another process's trial with a
    reason: ``study.tell(number, FAIL)`` cannot say why, and the queue must
    tell a lost worker (rerun, not a failure) from a failing point. So this is
    the one place that goes through the storage interface itself.
    """
    from optuna.trial import TrialState as S

    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), trial.number
    )
    storage.set_trial_user_attr(trial_id, "error", "worker lost")
    storage.set_trial_user_attr(trial_id, "lost", True)
    # it may have finished meanwhile (another worker reconciled it)
    with contextlib.suppress(RuntimeError, ValueError):
        storage.set_trial_state_values(trial_id, S.FAIL)


def reconcile(
    storage, study, spec: SweepSpec, grace_s: float = 600.0, stop=None
) -> dict[str, int]:
    """Fail orphaned trials and enqueue every grid point that still needs a run.

    ``stop`` (set by a signal) ends the enqueueing between two points: a large
    grid takes a while, and the next reconcile queues the rest.
    """
    from optuna.trial import TrialState as S

    for trial in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
        if trial.user_attrs.get("point") and not _owner_alive(trial, grace_s):
            _mark_lost(storage, study, trial)
    counts = {"queued": 0, "done": 0, "failed": 0}
    by_key: dict[str, list] = {}
    for trial in study.get_trials(deepcopy=False):
        key = trial.user_attrs.get("point")
        if key:
            by_key.setdefault(key, []).append(trial)
    for point in spec.points():
        if stop is not None and stop.is_set():
            break
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
    """Writes a timestamp into the running trial every ``interval`` seconds."""

    def __init__(self, trial, interval: float = 30.0) -> None:
        self._stop = threading.Event()

        def beat():
            while not self._stop.wait(interval):
                try:
                    trial.set_user_attr("heartbeat", time.time())
                except Exception as error:
                    # the database is away: the lease runs out, and the
                    # worker learns of it at its next write
                    if not database_error(error):
                        raise

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
):
    """Train and evaluate one grid point; returns its RunRecord.

    ``stop`` ends the training early (the trial is then left for a resume);
    ``on_event`` sees every training and evaluation event (the GUI's progress).
    """
    from .data import Dataset
    from .runs import describe_data, run
    from .splits import held_out

    config = spec.run_config(point)

    def observe(event):
        if on_event is not None:
            on_event(event)
        if report is not None and event.kind == "validation":
            report(-event.metrics["val_box_loss"], event.step)

    dataset = None
    if spec.data and not config.data.annotation:
        # files (the GUI's layers, written under home/data/<hash>): tables and
        # cards name them as the spec does ("napari layers nuclei"), not by path
        from .splits import load

        dataset = load(config)
        dataset.source = spec.dataset
    test_set = held_out(config, dataset, benchmark_split=spec.eval_split)
    if spec.eval_images:
        test_set = Dataset(list(test_set)[: spec.eval_images], test_set.source)
    params = dict(point)
    if spec.data:  # a sweep over files: name them as a single run does
        params.setdefault("dataset", describe_data(config, dataset))
    record = run_to_end(
        run(
            config,
            run_dir,
            dataset=dataset,
            test_set=test_set,
            metrics=spec.metrics,
            params=params,
            stop=stop,
        ),
        observe,
    )
    if record.status == "stopped":
        raise Stopped(f"stopped at step {record.iterations}")
    return record


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
        "pid_start": process_start(os.getpid()),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "heartbeat": time.time(),
    }.items():
        trial.set_user_attr(key, value)
    with Heartbeat(trial):
        record = runner(spec, point, run_dir, report)
    for key, value in record.attrs().items():
        if key not in ("values", "point"):  # the queue's key stays as enqueued
            trial.set_user_attr(key, value)
    value = record.metrics.get(spec.primary)
    if value is None:
        raise optuna.TrialPruned(f"{spec.primary} was not computed")
    return float(value)


def run_worker(
    storage: str,
    spec: SweepSpec,
    runs_root: str | Path,
    grace_s: float = 600.0,
    runner: PointRunner | None = None,
    max_points: int | None = None,
    stop=None,
    on_event=None,
) -> int:
    """Run grid points until none is left; returns how many this worker ran.

    ``stop`` (anything with ``is_set()``) ends the worker after the current
    step; the interrupted point is queued again by the next ``reconcile``.
    Without one, SIGINT and SIGTERM stop it so. ``on_event(trial_number,
    event)`` sees the events of every point.
    """
    restore = None
    if stop is None:
        stop, restore = _stop_on_signals()
    try:
        return _run_points(
            storage, spec, runs_root, grace_s, runner, max_points, stop, on_event
        )
    finally:
        if restore is not None:
            restore()


def _run_points(storage, spec, runs_root, grace_s, runner, max_points, stop, on_event):
    import optuna
    from optuna.trial import TrialState as S

    runner = runner or run_point
    backend = open_storage(storage, write=True)
    study = open_study(backend, spec.name, create=True)
    claim(study, spec, redact(storage))
    study.set_user_attr("spec", {**spec.__dict__})
    runs_root, ran = Path(runs_root), 0
    if stop is not None or on_event is not None:
        runner = _observed(runner, stop, on_event)
    while (max_points is None or ran < max_points) and not (stop and stop.is_set()):
        reconcile(backend, study, spec, grace_s, stop)
        if stop is not None and stop.is_set():
            break
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
        except KeyboardInterrupt:  # Ctrl-C after a first signal: at once
            trial.set_user_attr("error", "stopped at once")
            trial.set_user_attr("lost", True)
            study.tell(trial, state=S.FAIL)
            raise
        except Exception as error:  # a failing point must not stop the sweep
            if database_error(error):  # ... but a database that went away does
                raise
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            trial.set_user_attr("traceback", traceback.format_exc()[-2000:])
            study.tell(trial, state=S.FAIL)
        else:
            study.tell(trial, value)
        ran += 1
    return ran


# the first signal that stopped a worker of this process (an inline sweep exits
# 128 + it)
STOPPED_BY: list[int] = []


def _stop_on_signals():
    """A stop flag that SIGINT or SIGTERM sets (SLURM's time limit, ``scancel``),
    and the function that removes its handlers: the running point saves its
    checkpoint and is queued again, not failed. The first signal decides
    (``core.signals``); a second Ctrl-C stops at once."""
    from . import signals
    from .events import StopToken

    stop = StopToken()
    STOPPED_BY.clear()
    restore = signals.install(stop, on_first=STOPPED_BY.append, chain_sigterm=True)
    return stop, restore


def _observed(runner: PointRunner, stop, on_event) -> PointRunner:
    """``runner`` with the stop flag and the event callback of one worker."""

    def run(spec, point, run_dir, report):
        number = int(Path(run_dir).name.rsplit("-t", 1)[-1])
        forward = None if on_event is None else lambda e: on_event(number, e)
        return runner(spec, point, run_dir, report, stop=stop, on_event=forward)

    return run
