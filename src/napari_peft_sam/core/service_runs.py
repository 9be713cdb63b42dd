"""The model service's requests about runs: data, training, sweeps, results, export.

Checking a data source, a training run (``core.runs.run``), the
annotate-retrain loop on an annotation set, sweeps (inline with events, or as
polled jobs), the results table and exporting a run. Runs in the service's
process (``core.service``); registered with ``@serves`` (``core.service_ops``).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from . import requests
from .events import StopToken
from .service_ops import serves

# -- data -----------------------------------------------------------------------------


@serves(requests.InspectData)
def inspect_data(source: dict[str, Any], val_fraction: float = 0.2) -> dict[str, Any]:
    """How many images and objects a source holds, and its split."""
    from .sources import from_request

    return from_request(source).summary(val_fraction)


def _materialise(source: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Layer arrays -> TIFFs in the run folder, so the CLI can reproduce the run."""
    from .sources import write_pairs

    images, labels = write_pairs(source["images"], source["labels"], run_dir / "data")
    return {"images": images, "labels": labels, "stack": source.get("stack", False)}


# -- training -------------------------------------------------------------------------


@serves(requests.Train)
def train(
    config: dict,
    run_dir: str,
    source: dict[str, Any] | None = None,
    storage: str | None = None,
    study: str = "gui",
    stop: StopToken | None = None,
):
    """Train, evaluate on the held-out split and record the run (``core.runs.run``).

    ``config["train"]`` holds the settings the user set; the rest comes from
    the base model's recipe, exactly as on the command line.
    """
    from dataclasses import asdict

    from .config import RunConfig
    from .recipes import resolve
    from .runfolder import RunFolder
    from .runs import run

    dataset = None
    if source is not None and source["kind"] == "arrays":
        from .sources import from_request

        dataset = from_request(source)  # checks before anything is written
    train_config, sources = resolve(config.get("train"), config["model"]["name"])
    run_config = RunConfig.from_dict({**config, "train": train_config.to_dict()})
    run_config.train_sources = sources
    with RunFolder(run_dir) as folder:  # checked and owned before a file is written
        if dataset is not None:
            vars(run_config.data).update(_materialise(source, Path(run_dir)))
        record = yield from run(
            run_config,
            run_dir,
            dataset=dataset,
            storage=storage,
            study=study,
            stop=stop,
            folder=folder,
        )
    return asdict(record)


# -- the annotate-retrain loop --------------------------------------------------------


@serves(requests.AddToSet)
def add_to_set(
    home: str, name: str, items: list[dict[str, Any]], held_out_every: int = 4
) -> dict[str, Any]:
    """Add annotated images as the set's next version; returns the set's summary."""
    from .annotations import AnnotationSet, Item

    aset = AnnotationSet.open(home, name, held_out_every=held_out_every)
    version = aset.add([Item(**item) for item in items])
    return aset.summary() | {"added": version}


@serves(requests.Retrain)
def retrain(
    home: str,
    name: str,
    run_dir: str,
    model: dict[str, Any] | None = None,
    method: dict[str, Any] | None = None,
    init_from: str | None = None,
    train: dict[str, Any] | None = None,
    storage: str | None = None,
    study: str = "annotate",
    stop: StopToken | None = None,
):
    """Retrain on the set's newest version (``core.retrain.retrain``)."""
    from dataclasses import asdict

    from .annotations import AnnotationSet
    from .retrain import retrain as retrain_set

    aset = AnnotationSet.open(home, name, create=False)
    record = yield from retrain_set(
        aset,
        run_dir,
        model=model,
        method=method,
        init_from=init_from,
        train=train,
        storage=storage,
        study=study,
        stop=stop,
    )
    return asdict(record)


# -- results and sweeps ---------------------------------------------------------------


@serves(requests.Rows)
def rows(storage: str) -> list[dict[str, Any]]:
    from .results import rows as table_rows

    if "://" not in storage and not Path(storage).exists():
        return []
    return table_rows(storage)


@serves(requests.BeforeScores)
def before_scores(rows: list[dict], home: str, stop: StopToken | None = None):
    """``{run_dir: base model's metrics}``: evaluated once per base model and
    test set, cached under ``home/baselines`` (``core.baseline``)."""
    from .baseline import before_scores as scores

    return (yield from scores(rows, home, stop=stop))


@serves(requests.RenderTable)
def render_table(table: list[dict], fmt: str = "markdown") -> str:
    from .results import markdown, to_csv

    return markdown(table) if fmt == "markdown" else to_csv(table)


@serves(requests.Sweep)
def sweep(
    spec: dict[str, Any],
    storage: str,
    runs: str,
    executor: str = "inline",
    workers: int = 1,
    options: dict | None = None,
    stop: StopToken | None = None,
):
    """Run a sweep: here, step by step with events, or as jobs that are polled."""
    from .sweep import SweepSpec
    from .worker import run_worker

    sweep_spec = SweepSpec.from_dict(spec)
    if executor == "inline":
        events: queue.SimpleQueue = queue.SimpleQueue()
        done: list = []

        def work():
            try:
                done.append(
                    run_worker(
                        storage,
                        sweep_spec,
                        runs,
                        stop=stop,
                        on_event=lambda n, e: events.put((n, e)),
                    )
                )
            except BaseException as error:  # surfaced on the service's thread
                done.append(error)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        while worker.is_alive() or not events.empty():
            try:
                trial, event = events.get(timeout=0.2)
            except queue.Empty:
                continue
            yield {"trial": trial, "event": event}
        if isinstance(done[0], BaseException):
            raise done[0]
        return {"ran": done[0]}
    return (
        yield from _sweep_jobs(
            sweep_spec, storage, runs, executor, workers, options, stop
        )
    )


def _sweep_jobs(spec, storage, runs, executor, workers, options, stop):
    import time

    from .executors import cancel, job_states, launch

    jobs = launch(spec, storage, runs, executor, workers, options=options)
    ids = [str(job.job_id) for job in jobs]
    while not all(job.done() for job in jobs):
        if stop is not None and stop.is_set():
            cancel(storage, spec.name)
            return {"cancelled": len(jobs)}
        states = job_states(ids) if executor == "slurm" else {}
        yield {"jobs": ids, "states": states}
        time.sleep(2.0)
    return {"ran": len(jobs)}


@serves(requests.Export)
def export(
    run_dir: str,
    fmt: str,
    out: str,
    tag: str = "best",
    overwrite: bool = False,
    decoder: bool = True,
) -> dict[str, Any]:
    """Export a run (``core.export.export_run``); the recipe says how to open it."""
    from .export import export_run

    return export_run(run_dir, fmt, out, tag, overwrite=overwrite, decoder=decoder)
