"""Export a run where people segment: micro-sam, its annotator, and bioimage.io.

``export_run(run_dir, fmt, out)`` writes one of three formats:

- ``micro-sam``: the full state dict under micro-sam's PEFT module names, in
  torch_em's trainer layout (``model_state``, plus ``decoder_state`` when the
  run trained the AIS decoder) with a ``peft_kwargs`` entry whose PEFT module
  is stored by class name, as micro-sam's development branch writes it. It
  loads with ``get_sam_model(model_type, checkpoint_path, peft_kwargs)`` (and
  ``get_predictor_and_decoder``), for scripts and further fine-tuning.
- ``merged``: the adapter folded into plain SAM weights, in the layout
  ``micro_sam.util.export_custom_sam_model`` writes (a plain state dict, or
  ``model_state`` + ``decoder_state``). micro-sam's annotator opens it and its
  automatic segmentation then uses this run's decoder.
- ``bioimageio``: a bioimage.io model package made by micro-sam's own
  exporter from the merged weights (``core.bioimageio_export``).

A JSON recipe beside each checkpoint (``OUT.json``) says how to load it; it is
checked like the checkpoint, and both are written or neither. No run's own
files are ever overwritten, an existing target only when asked to, and weights
holding NaN or infinite values are refused.
"""

from __future__ import annotations

import json
import os
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .files import staged, writing

if TYPE_CHECKING:  # torch loads with the first export, not with FORMATS
    import torch

    from .methods.base import MethodConfig
    from .models import BaseModelInfo

FORMATS = {
    "micro-sam": "PEFT checkpoint for micro-sam's Python API and further "
    "fine-tuning (needs the PEFT settings beside it).",
    "merged": "Plain SAM weights (with the AIS decoder) that micro-sam's "
    "annotator and other SAM tools open directly.",
    "bioimageio": "A bioimage.io model package (.zip or folder) for the model "
    "zoo, BiaPy and deepImageJ.",
}
MICROSAM_ARCHITECTURES = ("vit_b", "vit_l", "vit_h")
# what a run folder holds (checkpoints.CARD first); an export never replaces these
RUN_FILES = ("card.json", "state.pt", "events.jsonl", "adapter_*.pt", "decoder_*.pt")


def export_run(
    run_dir: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike,
    tag: str = "best",
    *,
    overwrite: bool = False,
    decoder: bool = True,
    **package: Any,
) -> dict[str, Any]:
    """Export run ``run_dir`` as ``fmt`` to ``out``; returns how to load it.

    Parameters
    ----------
    run_dir
        A run folder (``card.json`` and adapter files).
    fmt
        ``micro-sam``, ``merged`` or ``bioimageio`` (see the module docstring).
    out
        Target file (a path ending in ``/``: a file named after the run in
        that folder); for ``bioimageio`` a ``.zip`` file or a folder.
    tag
        Which adapter: ``best`` or ``latest``.
    overwrite
        Replace an existing ``out`` (never one of the run's own files).
    decoder
        Include the run's AIS decoder where it has one.
    **package
        For ``bioimageio``: ``name``, ``authors`` (list of names) and
        ``test_data`` (a Dataset to take the test image from instead of the
        run's held-out images).

    Returns
    -------
    dict
        The recipe: ``format``, ``path``, ``model_type``, ``decoder`` and
        ``how_to_open`` (a sentence for the user); checkpoints also carry
        ``checkpoint_path``, ``peft_kwargs``, ``hash`` and, off 1024 px,
        ``image_size``.
    """
    from .checkpoints import load_run, read_card
    from .methods import config_from_dict, get_method, trainable_state
    from .models import BaseModelInfo

    if fmt not in FORMATS:
        raise UserError(f"Unknown export format {fmt!r}; use {', '.join(FORMATS)}.")
    into_folder = str(out).endswith(("/", os.sep))  # "--out newdir/": a folder
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise UserError(f"Run folder {run_dir} does not exist; pass a run's folder.")
    if into_folder and fmt != "bioimageio":
        out = out / f"{run_dir.resolve().name}-{fmt}.pt"
    card = read_card(run_dir)
    cfg = config_from_dict(card["method"])
    info = BaseModelInfo(**card["base_model"])
    check_target(run_dir, out, overwrite, sidecar=fmt != "bioimageio")
    check_exportable(fmt, card)
    sam, card = load_run(run_dir, tag)
    decoder_state = load_decoder_state(run_dir, tag) if decoder else None
    # only what training changed: the base model's weights are checked by hash
    check_finite(trainable_state(sam), decoder_state, run_dir, tag)
    if fmt == "bioimageio":
        from .bioimageio_export import export_package

        spec = get_method(cfg.method)
        spec.merge(sam, cfg)
        with writing(out, "choose another --out"):
            recipe = export_package(
                sam.state_dict(), decoder_state, card, out, overwrite, **package
            )
        recipe["how_to_open"] = how_to_open(recipe)
        return recipe
    payload, recipe = checkpoint_payload(fmt, sam, cfg, info, decoder_state)
    return write_checkpoint(out, payload, recipe)


def check_finite(
    state: dict[str, torch.Tensor], decoder_state: dict | None, run_dir: Path, tag: str
) -> None:
    """Refuse to export trained tensors (the adapter's, the decoder's) holding
    NaN or infinite values: a diverged run."""
    import torch

    for name, tensor in (*state.items(), *(decoder_state or {}).items()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(
                f"The {tag} weights of {run_dir} hold NaN or infinite values ({name}): "
                "the run diverged; retrain with a lower learning rate."
            )


def format_problem(fmt: str, card: dict[str, Any]) -> str | None:
    """Why the run of ``card`` cannot be exported as ``fmt`` (one sentence), or None.

    Torch-free, from the card alone: ``export`` refuses with it and the GUI's
    export dialog greys the format out with it as the tooltip.
    """
    from .methods import config_from_dict, get_method

    cfg = config_from_dict(card["method"])
    spec, base = get_method(cfg.method), card["base_model"]
    architecture, size = base.get("architecture"), base.get("image_size", 1024)
    if fmt in ("merged", "bioimageio") and spec.merge is None:
        return (
            f"{cfg.title} cannot be merged into plain SAM weights (its adapter "
            "is not linear in them); export with --format micro-sam instead."
        )
    # what checkpoints.microsam_load_recipe needs to rebuild the model
    if fmt == "micro-sam" and (
        architecture not in MICROSAM_ARCHITECTURES or spec.microsam_kwargs is None
    ):
        return (
            f"micro-sam cannot rebuild a {architecture} model with "
            f"{cfg.title}; export with --format merged instead."
        )
    if fmt != "bioimageio":
        return None
    if architecture not in MICROSAM_ARCHITECTURES:
        return (
            f"micro-sam's bioimage.io exporter describes only vit_b, vit_l and vit_h "
            f"models, not this run's {base.get('name')!r} base model; fine-tune one "
            "of those to share it on bioimage.io."
        )
    if size != 1024:
        return (
            f"bioimage.io packages of SAM run at a 1024 px input, but this run used "
            f"{size} px; export with --format merged for micro-sam instead."
        )
    return None


def check_exportable(fmt: str, card: dict[str, Any]) -> None:
    """Refuse, in one sentence each, what a format cannot hold."""
    problem = format_problem(fmt, card)
    if problem:
        raise UserError(problem)


def check_target(run_dir: Path, out: Path, overwrite: bool, sidecar: bool) -> None:
    """Refuse a target that holds the run, is any run's own file (the recipe
    beside it too), or exists and is not to be replaced."""
    run = run_dir.resolve()
    if out.resolve() == run or run.is_relative_to(out.resolve()):
        raise UserError(f"{out} holds the run itself; choose a target outside it.")
    paths = (out, recipe_path(out)) if sidecar else (out,)
    for path in paths:
        if is_run_file(path):
            raise UserError(
                f"{path} is one of the run's own files in {path.parent}; choose "
                "another name for the export."
            )
    if not sidecar:
        return check_package_target(out, overwrite)
    for path in paths:
        if path.is_dir():
            raise UserError(
                f"{path} is a folder; give a file name for the export (or end --out "
                "with / to write into a folder)."
            )
        if path.exists() and not overwrite:
            raise UserError(
                f"{path} already exists; choose another target or pass --overwrite "
                "to replace it."
            )
    if recipe_path(out).exists() and not is_recipe(recipe_path(out)):
        raise UserError(
            f"{recipe_path(out)} is not an export's recipe, and an export writes its "
            "recipe there; choose another name for the export."
        )


def check_package_target(out: Path, overwrite: bool) -> None:
    """A bioimage.io target: a new or replaceable .zip, or a package folder."""
    if out.exists() and not overwrite:
        raise UserError(
            f"{out} already exists; choose another target or pass --overwrite to replace it."
        )
    if out.suffix.lower() == ".zip":
        if out.is_dir():
            raise UserError(f"{out} is a folder; give a file name for the export.")
        return
    package_files = ("rdf.yaml", "bioimageio.yaml")
    if out.exists() and not any((out / f).is_file() for f in package_files):
        raise UserError(
            f"{out} exists but is not a bioimage.io package folder; choose a new "
            "folder or a .zip file."
        )


def recipe_path(out: Path) -> Path:
    """The JSON recipe beside an exported checkpoint."""
    return out.with_name(out.name + ".json")


def is_recipe(path: Path) -> bool:
    """Whether ``path`` is a recipe an earlier export wrote (so replaceable)."""
    try:
        recipe = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recipe, dict) and recipe.get("format") in FORMATS


def is_run_file(path: Path) -> bool:
    """Whether ``path`` is one of a run folder's own files (any run's)."""
    from .runfolder import CARD

    folder = path.resolve().parent
    return (folder / CARD).is_file() and any(fnmatch(path.name, p) for p in RUN_FILES)


def load_decoder_state(run_dir: Path, tag: str) -> dict[str, torch.Tensor] | None:
    """The run's AIS decoder tensors (micro-sam's ``decoder_state``), if it has them."""
    import torch

    from .decoder import decoder_path

    path = decoder_path(run_dir, tag)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_payload(
    fmt: str,
    sam: torch.nn.Module,
    cfg: MethodConfig,
    info: BaseModelInfo,
    decoder_state: dict | None,
) -> tuple[Any, dict[str, Any]]:
    """What a ``micro-sam`` or ``merged`` file holds, and its loading recipe."""
    from .checkpoints import microsam_load_recipe
    from .methods import get_method

    spec = get_method(cfg.method)
    if fmt == "merged":
        spec.merge(sam, cfg)
        state = sam.state_dict()
        recipe = {"model_type": info.architecture, "peft_kwargs": None}
        if info.image_size != 1024:
            recipe["image_size"] = info.image_size
        # export_custom_sam_model's layouts: plain, or model + decoder state
        payload = (
            state
            if decoder_state is None
            else {"model_state": state, "decoder_state": decoder_state}
        )
    else:
        recipe = microsam_load_recipe(info, cfg)
        payload = {"model_state": spec.microsam_state(sam.state_dict(), cfg)}
        if recipe["peft_kwargs"]:  # micro-sam dev: the module by class name
            payload["peft_kwargs"] = dict(recipe["peft_kwargs"])
        if decoder_state is not None:
            payload["decoder_state"] = decoder_state
    recipe = {"format": fmt, **recipe, "decoder": decoder_state is not None}
    return payload, recipe


def write_checkpoint(out: Path, payload: Any, recipe: dict) -> dict[str, Any]:
    """Write ``payload`` and its recipe beside it, both or neither; returns the
    recipe (with the file's path, hash and how to open it)."""
    import torch

    from .models import file_hash

    cpu = _to_cpu(payload)
    with writing(out, "choose another --out"), staged(out, recipe_path(out)) as tmp:
        torch.save(cpu, tmp[0])
        recipe = {
            **recipe,
            "path": str(out),
            "checkpoint_path": str(out),
            "hash": file_hash(tmp[0]),
        }
        recipe["how_to_open"] = how_to_open(recipe)
        tmp[1].write_text(json.dumps(recipe, indent=2, default=str) + "\n")
    return recipe


def _to_cpu(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


def how_to_open(recipe: dict[str, Any]) -> str:
    """One or two sentences: where this export opens and the exact call."""
    path, model_type = recipe["path"], recipe.get("model_type")
    if recipe["format"] == "bioimageio":
        return (
            f"Upload {path} at bioimage.io or open it in BiaPy or deepImageJ; "
            f"check it first with: bioimageio test {path}"
        )
    if model_type not in MICROSAM_ARCHITECTURES:
        return (
            f"micro-sam builds only vit_b, vit_l and vit_h models; use {path} as a base "
            f"model here: napari-peft-sam train --model {model_type} --checkpoint {path} ..."
        )
    size = recipe.get("image_size")
    if recipe["format"] == "merged" and not size:
        ais = " (its automatic segmentation uses the run's decoder)"
        return (
            f"Open it in micro-sam's annotator{ais if recipe['decoder'] else ''}: "
            f"micro_sam.annotator_2d -i IMAGE -m {model_type} -c {path}, or in napari "
            "under Annotator 2d > Embedding Settings > custom weights path."
        )
    peft = ", peft_kwargs=PEFT_KWARGS" if recipe.get("peft_kwargs") else ""
    size_arg = f", image_size={size}" if size else ""
    text = (
        f"Load it with micro_sam.util.get_sam_model(model_type={model_type!r}, "
        f"checkpoint_path={path!r}{peft}{size_arg})"
    )
    if peft:
        text += (
            f", where PEFT_KWARGS is 'peft_kwargs' in {path}.json with 'peft_module' "
            "replaced by the class of that name in micro_sam.models.peft_sam"
        )
    if recipe.get("decoder"):
        text += "; its 'decoder_state' is the AIS decoder (micro_sam.instance_segmentation.get_decoder)"
    if size and recipe["format"] == "merged":
        text += (
            f" (micro-sam's annotator builds 1024 px models, this run used {size} px)"
        )
    return text + "."
