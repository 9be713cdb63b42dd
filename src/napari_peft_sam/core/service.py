"""The model service: a child process that holds torch, micro-sam and the models.

The napari plugin never trains, evaluates or prompts in its own process. A
CUDA out-of-memory or a segfault in training would take napari down with it,
and importing torchvision after napari has created its OpenGL canvas segfaults
under Mesa software OpenGL. So the GUI starts this module as a fresh
interpreter (``python -m napari_peft_sam.core.service``), talks to it over a
local authenticated connection and renders the events that come back.

Protocol (pickled tuples):

- request ``(job, request)``: ``request`` is a typed request of
  ``core.requests``; :data:`OPS` maps its ``op`` to the function that serves
  it; ``(job, None)`` asks job ``job`` to finish after its current step;
- replies ``(job, "event", payload)`` for every event a generator op yields,
  then ``(job, "done", value)`` or ``(job, "error", (message, is_user_error))``.

Requests run one after another on the main thread; a listener thread takes
stop requests at once. Nothing here imports napari or Qt.
"""

from __future__ import annotations

import argparse
import inspect
import os
import queue
import threading
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from . import requests
from .errors import UserError
from .events import StopToken

OPS: dict[str, Any] = {}


def serves(request_type: type[requests.Request]):
    """Register the decorated function as the server of ``request_type``."""

    def register(function):
        OPS[request_type.op] = function
        return function

    return register


class _State:
    """What the service keeps between requests: images and loaded models."""

    images: dict[str, np.ndarray] = {}
    segmenters: OrderedDict[str, Any] = OrderedDict()


# -- catalog and descriptions ---------------------------------------------------------


@serves(requests.Catalog)
def catalog() -> dict[str, Any]:
    """Everything the GUI's pickers offer, from the one source of truth each."""
    import dataclasses

    import torch

    from . import catalog as metric_catalog
    from .benchmarks import BENCHMARKS
    from .config import TrainConfig
    from .methods import available_methods, get_method
    from .models import available_models
    from .presets import PRESETS
    from .recipes import recipe_for
    from .sources import SAMPLE_DOMAINS

    models = available_models()
    return {
        "methods": [get_method(m).config_cls.describe() for m in available_methods()],
        "models": models,
        "recipes": {
            name: {"name": recipe_for(name).name, "settings": recipe_for(name).settings}
            for name in [*models, "vit_b", "vit_l", "vit_h"]
        },
        "train_settings": TrainConfig.describe(),
        "metrics": [dataclasses.asdict(m) for m in metric_catalog.METRICS],
        "presets": {name: PRESETS[name] for name in PRESETS},
        "benchmarks": list(BENCHMARKS),
        "samples": list(SAMPLE_DOMAINS),
        "devices": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
    }


@serves(requests.DescribeModel)
def describe_model(model: str, method: dict, train: dict) -> dict[str, Any]:
    """Trainable and total parameters and a GPU memory estimate, without weights."""
    import torch

    from .budget import estimate_training_memory
    from .methods import apply_method, config_from_dict, count_trainable
    from .models import architecture_of, build_sam
    from .recipes import resolve

    arch = architecture_of(model)
    cfg = config_from_dict(method)
    train_cfg, _ = resolve(train, model)
    with torch.device("meta"):  # shapes only: instant even for vit_h
        sam = build_sam(arch)
        apply_method(sam, cfg)
    total = sum(p.numel() for p in sam.parameters())
    trainable = count_trainable(sam)
    encoder_trainable = count_trainable(sam.image_encoder)
    return {
        "total": total,
        "trainable": trainable,
        "encoder_trainable": encoder_trainable,
        "memory_mb": estimate_training_memory(arch, sam, train_cfg),
    }


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


# -- prompting ------------------------------------------------------------------------


def _segmenter(model: dict[str, Any]):
    """A cached Segmenter (and AIS decoder) for a base model or a run folder."""
    from .device import autocast_for, resolve_device
    from .inference import Segmenter

    key = repr(sorted(model.items()))
    if key in _State.segmenters:
        _State.segmenters.move_to_end(key)
        return _State.segmenters[key]
    device = resolve_device(model.get("device", "auto"))
    decoder = None
    if model.get("run"):
        from .checkpoints import load_run
        from .decoder import load_adapter_decoder

        sam, card = load_run(model["run"], model.get("tag", "best"))
        decoder = load_adapter_decoder(
            model["run"], sam, model.get("tag", "best"), device
        )
        name = card["base_model"]["name"]
    else:
        from .models import load_base_model

        sam, _ = load_base_model(model["name"], model.get("checkpoint"))
        name = model["name"]
    # clicks take the machine's faster precision (bf16 where the CPU has it)
    size = sam.image_encoder.img_size
    autocast = autocast_for(device, name, "auto", "infer", size)
    _State.segmenters[key] = (Segmenter(sam, device, autocast=autocast), decoder)
    while len(_State.segmenters) > 4:  # a base model, runs being compared
        _State.segmenters.popitem(last=False)
    return _State.segmenters[key]


@serves(requests.SetImage)
def set_image(key: str, image: np.ndarray) -> list[int]:
    """Keep ``image`` (normalised as in training) for prompts under ``key``."""
    from .data import normalize_image

    _State.images[key] = normalize_image(np.asarray(image), "the image layer")
    if len(_State.images) > 8:
        _State.images.pop(next(iter(_State.images)))
    return list(_State.images[key].shape[:2])


def _image(key: str) -> np.ndarray:
    if key not in _State.images:
        raise UserError("The image is no longer loaded; pick the image layer again.")
    return _State.images[key]


@serves(requests.Segment)
def segment(
    model: dict[str, Any],
    key: str,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
) -> np.ndarray:
    """One object's mask from points ((x, y), label 1/0) and an optional box."""
    segmenter, _ = _segmenter(model)
    return segmenter.segment(_image(key), points, labels, box, key=key)


@serves(requests.Automatic)
def automatic(model: dict[str, Any], key: str) -> dict[str, Any]:
    """Every object: ais where the model has a decoder, amg otherwise."""
    from . import catalog
    from .automatic import default_settings, segmentations

    segmenter, decoder = _segmenter(model)
    kind = (catalog.AIS if decoder is not None else catalog.AMG).automatic
    image = _image(key)
    segmenter.embed(image, key)
    (labels,) = segmentations(kind, segmenter, image, decoder)
    return {"kind": kind, "labels": labels, "settings": default_settings(kind)}


@serves(requests.Prepare)
def prepare(model: dict[str, Any], key: str) -> list[int]:
    """Load ``model`` and embed image ``key`` now, so the first click is quick."""
    segmenter, _ = _segmenter(model)
    segmenter.embed(_image(key), key)
    return list(_image(key).shape[:2])


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


# -- the server loop ------------------------------------------------------------------


def handle(conn, job: int, request: requests.Request, tokens: dict) -> None:
    """Run one request and send its events and its outcome."""
    function = OPS.get(getattr(request, "op", None))
    try:
        if function is None:
            raise UserError(f"The model service cannot serve {request!r}.")
        kwargs = request.kwargs()
        if "stop" in inspect.signature(function).parameters:
            kwargs["stop"] = tokens.setdefault(job, StopToken())
        result = function(**kwargs)
        if inspect.isgenerator(result):
            while True:
                try:
                    conn.send((job, "event", next(result)))
                except StopIteration as end:
                    result = end.value
                    break
        conn.send((job, "done", result))
    except UserError as error:
        conn.send((job, "error", (str(error), True)))
    except Exception as error:  # reported, the service lives on
        detail = traceback.format_exc(limit=-3)
        conn.send((job, "error", (f"{type(error).__name__}: {error}\n{detail}", False)))
    finally:
        tokens.pop(job, None)


def serve(conn) -> None:
    """Answer requests until the GUI closes the connection."""
    queued: queue.SimpleQueue = queue.SimpleQueue()
    tokens: dict[int, StopToken] = {}

    def listen():
        while True:
            try:
                job, request = conn.recv()
            except (EOFError, OSError):
                queued.put(None)
                return
            token = tokens.setdefault(job, StopToken())
            if request is None:
                token.stop()
            else:
                queued.put((job, request))

    threading.Thread(target=listen, daemon=True).start()
    while (message := queued.get()) is not None:
        job, request = message
        if tokens.get(job) is not None and tokens[job].is_set():
            conn.send((job, "done", {"stopped": True, "before_start": True}))
            continue
        handle(conn, job, request, tokens)


def main(argv=None) -> None:
    from multiprocessing.connection import Client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address",
        required=True,
        help="the GUI's listener: a socket path, pipe or host:port",
    )
    args = parser.parse_args(argv)
    address = args.address
    host, _, port = address.rpartition(":")
    if port.isdigit() and "/" not in address and "\\" not in address:
        address = (host, int(port))  # TCP; a Unix socket or a pipe otherwise
    authkey = bytes.fromhex(os.environ.pop("NAPARI_PEFT_SAM_SERVICE_KEY"))
    conn = Client(address, authkey=authkey)
    try:
        serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
