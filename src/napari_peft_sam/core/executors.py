"""Where sweep workers run: in this process, as local processes, or as SLURM jobs.

All three run the same ``worker.run_worker`` against the same storage, so
workers can join and leave at any time. ``local`` and ``slurm`` go through
submitit; their job ids are stored in the study so that a restarted GUI or
shell can re-attach to them (``attach``) or cancel them (``cancel``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .store import open_storage, open_study
from .sweep import SweepSpec
from .worker import run_worker


class InlineJob:
    """The result of running a worker in this process (submitit's job interface)."""

    job_id = "inline"

    def __init__(self, ran: int) -> None:
        self.ran = ran

    def result(self) -> int:
        return self.ran

    def done(self) -> bool:
        return True


def _executor(kind: str, folder: Path, options: dict[str, Any]):
    import submitit

    if kind == "local":
        executor = submitit.LocalExecutor(folder=str(folder))
        # submitit's LocalExecutor times out after 2 minutes by default
        executor.update_parameters(timeout_min=int(options.get("time") or 24 * 60))
        return executor
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = {
        "name": "napari-peft-sam",
        "timeout_min": int(options.get("time") or 240),
        "mem_gb": options.get("mem") or 32,
        "cpus_per_task": options.get("cpus") or 8,
        "slurm_array_parallelism": options.get("array_parallelism") or 4,
    }
    if options.get("gpus"):
        params["gpus_per_node"] = options["gpus"]
    if options.get("partition"):
        params["slurm_partition"] = options["partition"]
    if options.get("setup"):
        params["slurm_setup"] = list(options["setup"])
    executor.update_parameters(**params)
    return executor


def launch(
    spec: SweepSpec,
    storage: str,
    runs: str | Path,
    kind: str = "inline",
    workers: int = 1,
    grace_s: float = 600.0,
    options: dict | None = None,
) -> list:
    """Start ``workers`` workers of ``kind``; returns their job handles."""
    runs = Path(runs).resolve()
    if kind == "inline":
        return [InlineJob(run_worker(storage, spec, runs, grace_s))]
    folder = runs / "jobs" / "%j"
    # create it before the workers start
    study = open_study(open_storage(storage, write=True), spec.name, create=True)
    executor = _executor(kind, folder, options or {})
    jobs = executor.map_array(
        run_worker,
        [storage] * workers,
        [spec] * workers,
        [str(runs)] * workers,
        [grace_s] * workers,
    )
    known = study.user_attrs.get("jobs", [])
    study.set_user_attr(
        "jobs",
        known + [{"kind": kind, "id": j.job_id, "folder": str(folder)} for j in jobs],
    )
    return jobs


def wait(jobs: list) -> list:
    """Block until every job ends; a job's failure surfaces here."""
    return [job.result() for job in jobs]


def attach(storage: str, study_name: str) -> list:
    """Job handles of a study's submitted jobs, after a restart."""
    import submitit

    study = open_study(open_storage(storage), study_name)
    handles = []
    for job in study.user_attrs.get("jobs", []):
        if job["kind"] == "slurm":
            handles.append(submitit.SlurmJob(folder=job["folder"], job_id=job["id"]))
        else:
            handles.append(submitit.LocalJob(folder=job["folder"], job_id=job["id"]))
    return handles


def cancel(storage: str, study_name: str) -> int:
    """Cancel every job of a study; the next ``reconcile`` re-queues their points."""
    # no done() filter: without SLURM accounting submitit cannot always tell,
    # and cancelling a finished job is harmless
    handles = attach(storage, study_name)
    for job in handles:
        job.cancel(check=False)
    return len(handles)
