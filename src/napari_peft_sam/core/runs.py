"""One path for a run: train, evaluate on the held-out (or a given) set, record.

A GUI run, a sweep trial, the demo's grid points and the CLI's recorded runs
all go through :func:`run`, so their rows in the results store have the same
keys by construction: :class:`~napari_peft_sam.core.records.RunRecord` is
that row.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import RunRecord

if TYPE_CHECKING:
    from .config import RunConfig
    from .data import Dataset
    from .events import Event


def describe_data(config: RunConfig, dataset: Dataset | None) -> str:
    """A short name of the run's data for tables (at most 60 characters)."""
    text = config.data.dataset or (dataset.source if dataset is not None else None)
    text = text or config.data.describe()
    return text if len(text) <= 60 else text[:57] + "..."


def method_params(config: RunConfig, dataset: str) -> dict[str, Any]:
    """What tells a single run apart: data, model, learning rate, method knobs."""
    values = config.method.to_dict()
    values.pop("method")
    values = {k: v for k, v in values.items() if not k.startswith("freeze_")}
    return {
        "dataset": dataset,
        "model": config.model.name,
        "lr": config.train.lr,
    } | values


def run(
    config: RunConfig,
    run_dir: str | Path,
    *,
    dataset: Dataset | None = None,
    test_set: Dataset | None = None,
    metrics: list[str] | None = None,
    params: dict[str, Any] | None = None,
    storage: str | None = None,
    study: str = "runs",
    stop=None,
    resume: bool = False,
    folder=None,
    allow_changes: bool = False,
    evaluate: bool = True,
    annotation: dict[str, Any] | None = None,
) -> Generator[Event, None, RunRecord]:
    """Train ``config`` into ``run_dir``, evaluate it, and record it.

    ``dataset`` is the run's data already loaded (napari layers); ``test_set``
    replaces the held-out split (``core.splits.held_out``) as the evaluation
    set; ``metrics`` default to the prompt metrics (plus ais when the run
    trains the decoder). With ``storage`` the record is added to ``study``.
    A stopped run is returned with status ``stopped``, neither evaluated nor
    recorded. ``folder``, ``resume`` and ``allow_changes`` go to
    ``core.training.train``; ``evaluate=False`` only trains. ``annotation``
    (an annotation set's name, version, round and effort; ``core.retrain``)
    goes into the record. Yields every training and evaluation event.
    """
    from . import catalog
    from .checkpoints import read_card
    from .evaluation import evaluate_model
    from .splits import held_out
    from .training import train

    if storage:
        check_storage(storage)
    result = yield from train(
        config,
        run_dir,
        stop=stop,
        resume=resume,
        dataset=dataset,
        folder=folder,
        allow_changes=allow_changes,
    )
    name = describe_data(config, dataset)
    params = params if params is not None else method_params(config, name)
    record = RunRecord(
        run_dir=str(run_dir),
        dataset=name,
        model=config.model.name,
        method=config.method.method,
        params=params,
        hyperparameters=config.method.to_dict() | {"lr": config.train.lr},
        settings=config.train.to_dict(),
        train_time_s=result.train_time_s,
        peak_memory_mb=result.peak_memory_mb,
        iterations=result.steps,
        trainable_parameters=read_card(run_dir)["trainable_parameters"],
        annotation=dict(annotation or {}),
    )
    if result.stopped and stop is not None and stop.is_set():
        record.status = "stopped"
        return record
    if not evaluate:
        return record
    test_set = test_set if test_set is not None else held_out(config, dataset)
    metrics = metrics or catalog.for_run(config.train.with_decoder)
    evaluation = yield from _until_stopped(
        evaluate_model(test_set, metrics, run_dir=run_dir, device=config.train.device),
        stop,
    )
    if evaluation is None:  # stopped during the evaluation
        from .runfolder import update_card

        reason = getattr(stop, "reason", None) or "stopped"
        update_card(run_dir, {"status": f"{reason} during the evaluation"})
        record.status = "stopped"
        return record
    record.metrics = evaluation.metrics
    record.evaluated_on = {"source": test_set.source, "images": len(test_set)}
    if storage:
        from .errors import UserError
        from .store import add_record, redact

        try:
            add_record(storage, study, record.attrs())
        except OSError as error:  # a full disk, a store made read-only meanwhile
            where = redact(storage)
            raise UserError(
                f"The run in {run_dir} is saved and evaluated, but the results store "
                f"{where} could not take it ({error.strerror or error}); fix that and "
                f"record it with: napari-peft-sam train --out {run_dir} --resume "
                f"--storage {where}"
            ) from None
    return record


def _until_stopped(events, stop):
    """Pass ``events`` on until ``stop`` is set: returns their result, or None
    after closing them when stopped."""
    while True:
        if stop is not None and stop.is_set():
            events.close()
            return None
        try:
            event = next(events)
        except StopIteration as done:
            return done.value
        yield event


def check_storage(location: str) -> None:
    """Refuse a results store a finished run could not be recorded in, before
    training starts; changes nothing on disk."""
    import os

    from .errors import UserError
    from .store import check_journal, is_url, open_storage

    if is_url(location):
        open_storage(location)
        return
    path = Path(location)
    if path.exists():
        check_journal(path)
        if not os.access(path, os.W_OK):
            raise UserError(f"The results store {path} is not writable.")
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(
            f"The results store {path} cannot be created ({parent} is not a writable "
            "folder); choose another --storage."
        )


def base_model_record(
    model: str,
    dataset: str,
    metrics: dict[str, float | None],
    evaluated_on: dict,
    params: dict[str, Any],
) -> RunRecord:
    """The row of a base model evaluated without training (the demo's first row)."""
    return RunRecord(
        run_dir=None,
        dataset=dataset,
        model=model,
        method="none",
        params=params,
        metrics=metrics,
        evaluated_on=evaluated_on,
        trainable_parameters=0,
    )
