"""Where sweep workers run: in this process, as local processes, or as SLURM jobs.

All of them run the same ``worker.run_worker`` against the same storage, so
workers can join and leave at any time. :data:`EXECUTORS` is the registry
the CLI's ``--executor`` and the Sweep widget list. ``local`` and ``slurm``
go through submitit; their job ids are stored in the study so that a
restarted GUI or shell can re-attach to them (``attach``) or cancel them
(``cancel``). A database password never reaches a job file: workers get the
URL without it and the password in their environment.

Before SLURM jobs are submitted, the request (GPUs, CPUs, memory) is checked
against the partition's nodes (``sinfo``); a request no node can meet is
refused in one sentence naming the flag to change, instead of jobs that fail
in ``sbatch`` or stay PENDING for ever.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .store import PASSWORD_ENV, open_storage, open_study, redact, without_password
from .sweep import SweepSpec, check_reuse, claim
from .worker import process_start, run_worker


class InlineJob:
    """The result of running a worker in this process (submitit's job interface)."""

    job_id = "inline"

    def __init__(self, ran: int) -> None:
        self.ran = ran

    def result(self) -> int:
        return self.ran

    def done(self) -> bool:
        return True


@dataclass(frozen=True)
class Executor:
    """A place to run workers: a title for the GUI and a submitit builder."""

    name: str
    title: str
    build: Callable[[Path, dict[str, Any]], Any] | None  # None: in this process


def _local(folder: Path, options: dict[str, Any]):
    import submitit

    executor = submitit.LocalExecutor(folder=str(folder))
    # submitit's LocalExecutor times out after 2 minutes by default
    executor.update_parameters(timeout_min=int(options.get("time") or 24 * 60))
    return executor


def _slurm(folder: Path, options: dict[str, Any]):
    import submitit

    request = slurm_request(options)
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = {"name": "napari-peft-sam", **submitit_parameters(options, request)}
    executor.update_parameters(**params)
    return executor


def submitit_parameters(options: dict[str, Any], request: dict) -> dict[str, Any]:
    """submitit's parameters for the SLURM rows of ``core.options`` (``request``:
    the GPUs, CPUs and memory that fit the partition, ``slurm_request``)."""
    from .options import SLURM

    values = {**options, **request}
    params = {}
    for option in SLURM:
        value = values.get(option.field)
        if option.field == "setup":
            value = list(value or []) or None
        elif not value:  # unset or 0 (no GPU): the row's default, if it has one
            value = option.default
        if value is not None:
            params[option.submitit] = int(value) if option.kind == "int" else value
    return params


EXECUTORS = {
    e.name: e
    for e in (
        Executor("inline", "here (one process)", None),
        Executor("local", "local processes", _local),
        Executor("slurm", "SLURM cluster", _slurm),
    )
}

# -- SLURM: what a partition's nodes offer --------------------------------------------


@dataclass(frozen=True)
class Nodes:
    """The largest node of a partition: CPUs, memory (GB) and GPUs."""

    partition: str
    cpus: int
    mem_gb: float
    gpus: int


def _gpus(gres: str) -> int:
    """GPUs in a GRES string like 'gpu:a100:4(S:0-1),shard:8' -> 4."""
    total = 0
    for part in gres.split(","):
        fields = part.split("(")[0].split(":")
        if fields[0] == "gpu" and fields[-1].isdigit():
            total = max(total, int(fields[-1]))
    return total


def partition_nodes(partition: str | None = None) -> Nodes:
    """What the partition's largest node offers, from ``sinfo``."""
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P|%c|%m|%G"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UserError(
            f"SLURM's sinfo did not answer ({error}); run the sweep where sbatch "
            "works (a login node), or use --executor local."
        ) from None
    rows = [line.split("|") for line in out.stdout.splitlines() if line.count("|") == 3]
    if out.returncode or not rows:
        raise UserError(
            "SLURM's sinfo lists no partition; run the sweep on a login node of the "
            "cluster, or use --executor local."
        )
    names = {r[0].rstrip("*") for r in rows}
    if partition is None:
        default = [r[0].rstrip("*") for r in rows if r[0].endswith("*")]
        partition = default[0] if default else rows[0][0].rstrip("*")
    elif partition not in names:
        raise UserError(
            f"SLURM has no partition {partition!r}; --partition takes one of "
            f"{', '.join(sorted(names))}."
        )
    mine = [r for r in rows if r[0].rstrip("*") == partition]
    return Nodes(
        partition,
        max(int(r[1].rstrip("+")) for r in mine),
        max(float(r[2].rstrip("+")) for r in mine) / 1024,
        max(_gpus(r[3]) for r in mine),
    )


def slurm_request(options: dict[str, Any], nodes: Nodes | None = None) -> dict:
    """GPUs, CPUs and memory per job that the partition's nodes can meet.

    Unset values take what fits (1 GPU where the partition has GPUs, up to 8
    CPUs and 32 GB); a given value no node offers is refused in one sentence.
    """
    nodes = nodes or partition_nodes(options.get("partition"))
    where = f"partition {nodes.partition!r}"
    gpus, cpus, mem = options.get("gpus"), options.get("cpus"), options.get("mem")
    if gpus is None:
        gpus = 1 if nodes.gpus else 0
    elif gpus > nodes.gpus:
        have = f"{nodes.gpus} GPU(s)" if nodes.gpus else "no GPUs"
        raise UserError(
            f"The {where} has {have} per node; pass --gpus {nodes.gpus} (or another "
            "--partition)."
        )
    if cpus is None:
        cpus = min(8, nodes.cpus)
    elif cpus > nodes.cpus:
        raise UserError(
            f"The {where} has {nodes.cpus} CPUs per node; pass --cpus {nodes.cpus} or fewer."
        )
    usable = max(1, int(nodes.mem_gb * 0.95))
    if mem is None:
        mem = min(32, usable)
    elif mem > nodes.mem_gb:
        raise UserError(
            f"The {where} has {nodes.mem_gb:.0f} GB per node; pass --mem {usable} or less."
        )
    return {"gpus": gpus, "cpus": cpus, "mem": mem}


def job_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM's state and reason per job id, e.g. 'PENDING (Resources)'."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in out.stdout.splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        states[job] = state if reason in ("", "None") else f"{state} ({reason})"
    return states


# -- launching -------------------------------------------------------------------------


def launch(
    spec: SweepSpec,
    storage: str,
    runs: str | Path,
    kind: str = "inline",
    workers: int = 1,
    grace_s: float = 600.0,
    options: dict | None = None,
    stop=None,
) -> list:
    """Start ``workers`` workers of ``kind``; returns their job handles.

    ``stop`` is the inline worker's (without it, it answers SIGINT and SIGTERM
    itself); workers in their own processes answer their signals.
    """
    if kind not in EXECUTORS:
        raise UserError(f"Unknown executor {kind!r}; choose {', '.join(EXECUTORS)}.")
    check_reuse(storage, spec.name, spec)
    runs = Path(runs).resolve()
    if EXECUTORS[kind].build is None:
        return [InlineJob(run_worker(storage, spec, runs, grace_s, stop=stop))]
    folder = runs / "jobs" / "%j"
    # create the study before the workers start
    study = open_study(open_storage(storage, write=True), spec.name, create=True)
    claim(study, spec, redact(storage))
    executor = EXECUTORS[kind].build(folder, options or {})
    public, password = without_password(storage)
    if password:  # inherited by local jobs and by sbatch (--export=ALL)
        os.environ[PASSWORD_ENV] = password
    jobs = executor.map_array(
        run_worker,
        [public] * workers,
        [spec] * workers,
        [str(runs)] * workers,
        [grace_s] * workers,
    )
    known = study.user_attrs.get("jobs", [])
    study.set_user_attr(
        "jobs", known + [_identity(kind, j.job_id, folder) for j in jobs]
    )
    return jobs


def wait(jobs: list, report: Callable[[str], None] | None = None) -> list:
    """Block until every job ends, reporting SLURM states and reasons as they
    change; a job's failure surfaces here."""
    import time

    last = None
    while not all(job.done() for job in jobs):
        slurm = [j.job_id for j in jobs if type(j).__name__.startswith("Slurm")]
        states = job_states(slurm)
        text = ", ".join(f"{k}: {v}" for k, v in sorted(states.items()))
        if report is not None and text and text != last:
            report(text)
            last = text
        time.sleep(2.0)
    return [job.result() for job in jobs]


def _identity(kind: str, job_id: str, folder: Path) -> dict:
    """What names a job later: a local job is its pid and the pid's start time
    (a pid alone may name another process by then)."""
    job = {"kind": kind, "id": job_id, "folder": str(folder)}
    if kind != "slurm" and str(job_id).isdigit():
        job["pid_start"] = process_start(int(job_id))
    return job


class LocalHandle:
    """A local worker process found again after a restart, by pid and start time.

    (``submitit.LocalJob`` without its process object cannot cancel, says "no
    process" for a live worker, and prints tracebacks when collected.)
    """

    def __init__(self, job: dict) -> None:
        self.job_id = str(job["id"])
        self._start = job.get("pid_start")

    def alive(self) -> bool:
        if not self.job_id.isdigit() or self._start is None:
            return False
        return process_start(int(self.job_id)) == self._start

    @property
    def state(self) -> str:
        return "RUNNING" if self.alive() else "FINISHED"

    def done(self) -> bool:
        return not self.alive()

    def cancel(self, check: bool = False) -> None:
        """SIGTERM: the worker stops after the current step, its point re-queued."""
        import signal

        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(self.job_id), signal.SIGTERM)


def attach(storage: str, study_name: str) -> list:
    """Job handles of a study's submitted jobs, after a restart."""
    import submitit

    study = open_study(open_storage(storage), study_name)
    handles = []
    for job in study.user_attrs.get("jobs", []):
        if job["kind"] == "slurm":
            handles.append(submitit.SlurmJob(folder=job["folder"], job_id=job["id"]))
        else:
            handles.append(LocalHandle(job))
    return handles


def cancel(storage: str, study_name: str) -> int:
    """Cancel every job of a study; the next ``reconcile`` re-queues their points."""
    # no done() filter: without SLURM accounting submitit cannot always tell,
    # and cancelling a finished job is harmless
    handles = attach(storage, study_name)
    for job in handles:
        job.cancel(check=False)
    return len(handles)
