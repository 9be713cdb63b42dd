"""Retrain on an annotation set: the step that closes the annotate-retrain loop.

One button in the Annotate widget, the service's ``Retrain`` request and the
annotation benchmark all call :func:`retrain`: it trains on the set's newest
version (warm-started from the current run's adapter, or from the base
model), with the base model's recipe, evaluates the set's held-out images and
records the run through ``core.runs.run``, like any other run, with the set's
name, version and the round's annotation effort in its record and card.
"""

from __future__ import annotations

import os
from typing import Any

from .annotations import AnnotationSet
from .errors import UserError


def retrain(
    aset: AnnotationSet,
    run_dir: str | os.PathLike,
    *,
    model: dict[str, Any] | None = None,
    method: dict[str, Any] | None = None,
    init_from: str | None = None,
    train: dict[str, Any] | None = None,
    storage: str | None = None,
    study: str = "annotate",
    stop=None,
):
    """Train on the set's newest version, evaluate its held-out images, record.

    Warm-starts from ``init_from`` (a run folder: its base model and method
    are kept) or starts from the base ``model`` with ``method``; ``train``
    holds the settings the user set, the rest comes from the base model's
    recipe. The run's record and card name the set and version; the record
    carries the effort of the round the new model follows. Yields the
    training and evaluation events; returns the ``RunRecord``.
    """
    from .runfolder import RunFolder
    from .runs import describe_data, method_params, run

    config, dataset, held = _retrain_config(aset, model, method, init_from, train)
    round = aset.round + 1
    annotation = {
        "set": aset.name,
        "folder": str(aset.folder),
        "version": aset.version,
        "round": round,
        "effort": aset.effort(round - 1)[0],
    }
    if config.train.with_decoder and aset.summary()["partial"]:
        raise UserError(
            "The AIS decoder needs every object of an image annotated; train "
            "without the decoder, or add only completely annotated images."
        )
    params = method_params(config, describe_data(config, dataset)) | {"round": round}
    with RunFolder(run_dir) as folder:
        record = yield from run(
            config,
            run_dir,
            dataset=dataset,
            test_set=held,
            params=params,
            storage=storage if held is not None else None,
            study=study,
            stop=stop,
            folder=folder,
            evaluate=held is not None,
            annotation=annotation,
        )
    if record.status == "stopped":
        return record
    if held is None and storage:  # no held-out image yet: the effort still counts
        from .store import add_record

        add_record(storage, study, record.attrs())
    aset.record_run(
        {
            "run_dir": str(run_dir),
            "version": annotation["version"],
            "round": round,
            "init_from": config.init_from,
            "model": config.model.name,
            "metrics": record.metrics,
            "held_out_images": len(held) if held is not None else 0,
        }
    )
    return record


def _retrain_config(aset, model, method, init_from, train):
    """The RunConfig of a retrain, its training set and held-out set."""
    from .config import DataSpec, ModelSpec, RunConfig
    from .methods import config_from_dict
    from .recipes import resolve

    version = aset.version
    if version == 0:
        raise UserError(f"Set {aset.name!r} is empty; add annotated images first.")
    if init_from:
        base = RunConfig.from_card(init_from)
        model_spec, method_config = base.model, base.method
    else:
        model_spec = ModelSpec(**(model or {"name": "demo"}))
        method_config = config_from_dict(method or {"method": "lora"})
    dataset, held = aset.datasets(version)
    _check_validation_tile(aset, dataset)
    paths = aset.folders(version)
    train_config, sources = resolve(train, model_spec.name)
    data = DataSpec(
        images=[str(paths["train_images"])],
        labels=[str(paths["train_labels"])],
        annotation=aset.describe(version),
    )
    config = RunConfig(
        data, model_spec, method_config, train_config, sources, init_from
    )
    return config, dataset, held


def _check_validation_tile(aset: AnnotationSet, dataset) -> None:
    """One training image is split into a training and a validation tile (the
    last fifth of its long side); say so plainly when that tile is empty."""
    if len(dataset) == 1 and not dataset.split()[1][0].n_objects:
        raise UserError(
            f"Set {aset.name!r} has one training image and its last fifth (the "
            "validation tile) holds no object; add another annotated image first."
        )
