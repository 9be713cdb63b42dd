"""bioimage.io model packages of a run, made by micro-sam's own exporter.

``micro_sam.bioimageio.export_sam_model`` describes a SAM model (vit_b, vit_l
or vit_h at a 1024 px input, run by micro-sam's ``PredictorAdaptor``) from
plain SAM weights, or from ``model_state`` + ``decoder_state``; with a decoder
the package takes an image alone and runs automatic instance segmentation.
It needs ``bioimageio.core`` 0.11 or later and a test image with its labels:
here a tile of one of the run's held-out images. The package's documentation
page is generated from the run card.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Dataset, relabel_consecutive
from .errors import UserError
from .files import atomic_write

CITATIONS = (
    (
        "Teuber, Archit and Pape. Parameter Efficient Fine-Tuning of Segment "
        "Anything Model for Biomedical Imaging (the PEFT-SAM study), 2025.",
        "10.48550/arXiv.2502.00418",
    ),
    (
        "Archit et al. Segment Anything for Microscopy. Nature Methods, 2025.",
        "10.1038/s41592-024-02580-4",
    ),
)
TILE = 256  # test image size: the model sees 1024 px anyway; the package stays small
INSTALL = "pip install 'napari-peft-sam[bioimageio]'"


def bioimageio_problem() -> str | None:
    """Why this environment cannot write bioimage.io packages, or None."""
    from packaging.version import Version

    try:
        core = Version(metadata.version("bioimageio.core"))
        spec = Version(metadata.version("bioimageio.spec"))
    except metadata.PackageNotFoundError:
        return f"bioimage.io export needs bioimageio.core 0.11 or later; {INSTALL}."
    if core < Version("0.11"):
        return f"bioimage.io export needs bioimageio.core 0.11 or later (found {core}); {INSTALL}."
    pydantic = Version(metadata.version("pydantic"))
    if spec < Version("0.5.14") and pydantic >= Version("2.14"):
        # bioimageio.spec 0.5.12 hands pydantic's serializer an argument 2.14 rejects
        return (
            f"bioimageio.spec {spec} cannot write packages with pydantic {pydantic}; "
            f"{INSTALL} (it keeps pydantic below 2.14)."
        )
    return None


def export_package(
    state: dict[str, torch.Tensor],
    decoder_state: dict[str, torch.Tensor] | None,
    card: dict[str, Any],
    out: Path,
    overwrite: bool = False,
    name: str | None = None,
    authors: list[str] | None = None,
    test_data: Dataset | None = None,
) -> dict[str, Any]:
    """Write the bioimage.io package of merged weights ``state`` to ``out``.

    ``out`` ending in ``.zip`` becomes a zip file, anything else a folder.
    Returns the recipe (``format``, ``path``, ``model_type``, ``decoder``,
    ``name``, ``test_image``).
    """
    problem = bioimageio_problem()
    if problem:
        raise UserError(problem)
    image, labels, test_name = test_pair(card, test_data)
    model_type = card["base_model"]["architecture"]
    name = package_name(name or default_name(card))
    with tempfile.TemporaryDirectory(prefix="napari-peft-sam-export-") as tmp:
        tmp = Path(tmp)
        weights = tmp / f"{model_type}.pt"
        payload = (
            state
            if decoder_state is None
            else {"model_state": state, "decoder_state": decoder_state}
        )
        torch.save(payload, weights)
        docs = tmp / "documentation.md"
        docs.write_text(documentation(card, name, test_name, decoder_state is not None))
        package = tmp / "package.zip"
        _run_exporter(
            image,
            labels,
            model_type,
            name,
            package,
            weights,
            description=description(card),
            authors=_authors(authors),
            cite=_citations(),
            tags=tags(card),
            documentation=str(docs),
        )
        _place(package, out, overwrite)
    return {
        "format": "bioimageio",
        "path": str(out),
        "model_type": model_type,
        "decoder": decoder_state is not None,
        "name": name,
        "test_image": test_name,
    }


def _run_exporter(image, labels, model_type, name, package, weights, **kwargs):
    if "matplotlib.pyplot" not in sys.modules:
        import matplotlib

        matplotlib.use("Agg")  # the cover image; no GUI backend in a headless process
    from micro_sam.bioimageio import export_sam_model

    try:
        export_sam_model(
            image, labels, model_type, name, package, checkpoint_path=weights, **kwargs
        )
    except RuntimeError as error:
        if "did not find any objects" not in str(error):
            raise
        raise UserError(
            "The run's AIS decoder finds no object in the held-out test image, so "
            "the package would fail bioimage.io's test; train the decoder longer or "
            "export without it (--no-decoder)."
        ) from None


def _place(package: Path, out: Path, overwrite: bool) -> None:
    """Move the package to ``out``: a zip file, or its contents as a folder."""
    if out.suffix.lower() == ".zip":
        with open(package, "rb") as source:
            atomic_write(out, lambda f: shutil.copyfileobj(source, f))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with zipfile.ZipFile(package) as archive:
            archive.extractall(staging)
        if out.exists() and overwrite:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            shutil.rmtree(old)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def validate_package(path: str | os.PathLike):
    """bioimage.io's own test of a package (``bioimageio test``): a ValidationSummary."""
    from bioimageio.core import test_model

    return test_model(str(path))


# -- test image, name, authors, citations, tags -----------------------------------


def held_out(card: dict[str, Any]) -> Dataset:
    """The run's held-out images: ``core.splits.held_out`` of its run config."""
    from . import splits
    from .config import RunConfig

    config = card.get("run_config")
    if not config:
        raise UserError(
            "This run's card names no training data, so there is no held-out image "
            "to test the package on; pass test images with --test-images/--test-labels."
        )
    return splits.held_out(RunConfig.from_dict(config))


def test_pair(
    card: dict[str, Any], test_data: Dataset | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """A ``TILE`` px tile of a held-out image with the most objects (at least two).

    Returns the uint8 (H, W, 3) image, its labels (ids 1..n) and a description.
    """
    dataset = test_data if test_data is not None else held_out(card)
    best, best_count = None, 1
    for sample in dataset:
        for y, x in _tile_origins(sample.labels.shape):
            window = np.s_[y : y + TILE, x : x + TILE]
            labels = relabel_consecutive(sample.labels[window], min_size=25)
            if labels.max() > best_count:
                best, best_count = (sample, window, labels), int(labels.max())
    if best is None:
        raise UserError(
            "No held-out image has two objects of 25 pixels or more to test the "
            "package on; add annotated images to the run's data."
        )
    sample, window, labels = best
    image = np.clip(np.rint(sample.image[window]), 0, 255).astype(np.uint8)
    y, x = window[0].start, window[1].start
    return image, labels, f"{sample.name} at y={y}, x={x} ({best_count} objects)"


def _tile_origins(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    def starts(n: int) -> list[int]:
        if n <= TILE:
            return [0]
        return sorted({*range(0, n - TILE, TILE // 2), n - TILE})

    return [(y, x) for y in starts(shape[0]) for x in starts(shape[1])]


def default_name(card: dict[str, Any]) -> str:
    base = card["base_model"]["name"]
    return f"{base} {card['method']['method']} fine-tuned (napari-peft-sam)"


def package_name(name: str) -> str:
    """A name bioimage.io accepts: letters, digits, ``_+-()`` and spaces, 5 to 64."""
    cleaned = re.sub(r"[^A-Za-z0-9_+\- ()]+", "-", name).strip(" -")[:64].strip()
    if len(cleaned) < 5:
        raise UserError(
            f"The package name {name!r} needs at least 5 letters, digits or spaces."
        )
    return cleaned


def _authors(names: list[str] | None):
    import getpass

    import bioimageio.spec.model.v0_5 as spec

    names = [n.strip() for n in names or [] if n.strip()] or [getpass.getuser()]
    bad = [n for n in names if "/" in n]
    if bad:
        raise UserError(f"An author's name may not contain '/', got {bad[0]!r}.")
    return [spec.Author(name=n) for n in names]


def _citations():
    import bioimageio.spec.model.v0_5 as spec

    return [spec.CiteEntry(text=text, doi=spec.Doi(doi)) for text, doi in CITATIONS]


def tags(card: dict[str, Any]) -> list[str]:
    base = card["base_model"]["name"]
    domain = {"_lm": "light-microscopy", "_em": "electron-microscopy"}
    extra = [tag for key, tag in domain.items() if key in base]
    method = card["method"]["method"].replace("_", "-")
    return [
        "segment-anything",
        "instance-segmentation",
        "micro-sam",
        "peft",
        method,
        "napari-peft-sam",
        *extra,
    ]


# -- the documentation page, from the run card -----------------------------------


def description(card: dict[str, Any]) -> str:
    base, method = card["base_model"]["name"], card["method"]["method"]
    data = (card.get("data") or {}).get("source", "the user's images")
    return (
        f"{base} (Segment Anything for microscopy) fine-tuned with the parameter-"
        f"efficient method {method} on {data}, using napari-peft-sam."
    )[:512]


def documentation(card: dict[str, Any], name: str, test_image: str, ais: bool) -> str:
    """The package's documentation page: model, method, data, metrics, use."""
    sections = [
        f"# {name}\n\n{description(card)}\n",
        _base_section(card),
        _method_section(card, ais),
        _data_section(card, test_image),
        _metrics_section(card),
        _use_section(card, ais),
        "## Cite\n\n" + "".join(f"- {t} doi:{d}\n" for t, d in CITATIONS),
    ]
    return "\n".join(sections)


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows if v not in (None, "", [])]
    return "\n".join(lines) + "\n"


def _base_section(card: dict[str, Any]) -> str:
    base = card["base_model"]
    rows = [
        ("model", f"{base['name']} ({base['source']})"),
        ("architecture", f"{base['architecture']}, {base['image_size']} px input"),
        ("weights hash", base.get("hash")),
    ]
    return "## Base model\n\n" + _table(rows)


def _method_section(card: dict[str, Any], ais: bool) -> str:
    method = dict(card["method"])
    name = method.pop("method")
    train = (card.get("run_config") or {}).get("train", {})
    rows = [
        ("method", name),
        ("hyperparameters", ", ".join(f"{k}={v}" for k, v in method.items())),
        ("effective LoRA scale", card.get("effective_lora_scale")),
        ("trainable parameters", f"{card.get('trainable_parameters', 0):,}"),
        ("AIS decoder", "trained with the adapter" if ais else "none"),
        ("steps", card.get("steps")),
        ("status", card.get("status")),
    ]
    keys = ("lr", "iterations", "batch_size", "n_objects", "scheduler", "seed")
    rows += [(k, train[k]) for k in keys if k in train]
    return "## Fine-tuning\n\n" + _table(rows)


def _data_section(card: dict[str, Any], test_image: str) -> str:
    data = card.get("data") or {}
    split = ((card.get("run_config") or {}).get("data")) or {}
    rows = [
        ("source", data.get("source")),
        ("training images", data.get("train_images")),
        ("held-out images", data.get("val_images")),
        ("validation fraction", split.get("val_fraction")),
        ("split seed", split.get("split_seed")),
        ("test image of this package", test_image),
    ]
    return "## Data\n\n" + _table(rows)


def _metrics_section(card: dict[str, Any]) -> str:
    metrics = card.get("metrics") or {}
    title = "## Validation\n\nHeld-out metrics: mean segmentation accuracy (mSA)"
    if not metrics:
        return (
            f"{title} was not measured before export (napari-peft-sam evaluate "
            "--run RUN_DIR adds it to the run card).\n"
        )
    rows = [(k, f"{v:.3f}") for k, v in metrics.items() if isinstance(v, float)]
    where = [e["dataset"] for e in card.get("evaluations", []) if e.get("dataset")]
    where_text = ", ".join(dict.fromkeys(where)) or "the run's held-out images"
    return f"{title} on {where_text}.\n\n" + _table(rows)


def _use_section(card: dict[str, Any], ais: bool) -> str:
    arch = card["base_model"]["architecture"]
    how = (
        "Given an image alone, the model runs automatic instance segmentation "
        "with its decoder. "
        if ais
        else "The model segments the objects its box, point or mask prompts point at. "
    )
    return (
        "## Use\n\n"
        + how
        + f"The weights file of this package ({arch}.pt) opens in micro-sam's "
        + f"annotator: `micro_sam.annotator_2d -i IMAGE -m {arch} -c {arch}.pt`.\n\n"
        + f"Reproduce the run with: `{card.get('command', '')}`\n"
    )
