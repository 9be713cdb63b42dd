"""Run folders: adapter files and the JSON run card (exports: ``core.export``).

A run folder holds ``adapter_best.pt`` / ``adapter_latest.pt`` (only the
tensors that trained, loaded with ``weights_only=True``), ``card.json`` (what
is needed to rebuild and reproduce the run) and, once training has run,
``events.jsonl``. Every file is written atomically: a temporary file in the
same folder, flushed to disk, then renamed over the target, so a crash or a
full disk leaves the previous version intact.
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .files import atomic_write, atomic_write_json  # noqa: F401  (re-exported)
from .methods import apply_method, config_from_dict, get_method, trainable_state
from .methods.base import MethodConfig
from .models import ARCHITECTURES, BaseModelInfo, load_base_model
from .runfolder import CARD, CARD_FORMAT, read_card  # noqa: F401  (re-exported)


def adapter_path(run_dir: str | os.PathLike, tag: str = "best") -> Path:
    return Path(run_dir) / f"adapter_{tag}.pt"


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> Path:
    cpu = {k: v.detach().to("cpu").clone() for k, v in tensors.items()}
    return atomic_write(path, lambda f: torch.save(cpu, f))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Adapter file {path} does not exist.")
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, unsafe pickle
        raise UserError(
            f"Adapter file {path} cannot be read ({type(error).__name__}); it is "
            "damaged or not an adapter: use the run's other adapter (--tag) or retrain."
        ) from None
    if not isinstance(tensors, dict):
        raise UserError(f"Adapter file {path} holds no tensors by name.")
    return tensors


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "napari-peft-sam",
        "torch",
        "micro_sam",
        "segment-anything-py",
        "numpy",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def microsam_load_recipe(info: BaseModelInfo, cfg: MethodConfig) -> dict[str, Any]:
    """The ``peft_kwargs`` (module as class name) micro-sam needs for this run."""
    if info.architecture not in ("vit_b", "vit_l", "vit_h"):
        return {}
    depth = ARCHITECTURES[info.architecture].depth
    spec = get_method(cfg.method)
    if spec.microsam_kwargs is None:
        return {}
    recipe: dict[str, Any] = {
        "model_type": info.architecture,
        "peft_kwargs": spec.microsam_kwargs(cfg, depth) or None,
    }
    if info.image_size != 1024:
        recipe["image_size"] = info.image_size
    return recipe


def make_card(
    info: BaseModelInfo, cfg: MethodConfig, model: nn.Module, **extra: Any
) -> dict[str, Any]:
    """A run card: everything needed to rebuild the model and reproduce the run."""
    from .methods import count_trainable

    return {
        "format": CARD_FORMAT,
        "version": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": info.to_dict(),
        "method": cfg.to_dict(),
        "effective_lora_scale": cfg.effective_scale(),
        "trainable_parameters": count_trainable(model),
        "micro_sam": microsam_load_recipe(info, cfg),
        "packages": package_versions(),
        **extra,
    }


def save_run(
    run_dir: str | os.PathLike,
    model: nn.Module,
    info: BaseModelInfo,
    cfg: MethodConfig,
    tags: tuple[str, ...] = ("best", "latest"),
    **card_extra: Any,
) -> Path:
    """Write adapter file(s) and the card of a model made by ``apply_method``."""
    run_dir = Path(run_dir)
    state = trainable_state(model)
    for tag in tags:
        save_tensors(adapter_path(run_dir, tag), state)
    write_card(run_dir, make_card(info, cfg, model, **card_extra))
    return run_dir


def write_card(run_dir: str | os.PathLike, card: dict[str, Any]) -> Path:
    """Write a new run's card (an existing card changes through ``update_card``)."""
    return atomic_write_json(Path(run_dir) / CARD, card)


def load_run(
    run_dir: str | os.PathLike, tag: str = "best", device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the fine-tuned model of a run folder: base + method + adapter."""
    card = read_card(run_dir)
    base = card["base_model"]
    checkpoint = base["checkpoint"] if base["source"] == "checkpoint" else None
    sam, info = load_base_model(
        base["name"], checkpoint=checkpoint, image_size=base["image_size"]
    )
    if base.get("hash") and info.hash != base["hash"]:
        raise UserError(
            f"The weights of base model {base['name']!r} differ from those this "
            f"run was trained on ({info.checkpoint}); restore the original file."
        )
    cfg = config_from_dict(card["method"])
    apply_method(sam, cfg)
    load_adapter_into(sam, adapter_path(run_dir, tag))
    return sam.to(device).eval(), card


def load_adapter_into(model: nn.Module, path: str | os.PathLike) -> None:
    """Load an adapter file; its tensors must be exactly the model's trainable ones."""
    tensors = load_tensors(path)
    expected = set(trainable_state(model))
    if set(tensors) != expected:
        missing = sorted(expected - set(tensors))
        extra = sorted(set(tensors) - expected)
        raise UserError(
            f"Adapter {path} does not match this model's method (missing "
            f"{missing[:1] or 'nothing'}, unexpected {extra[:1] or 'nothing'})."
        )
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as error:  # same names, other shapes: another rank or model
        first = str(error).split("\n")[1].strip() if "\n" in str(error) else ""
        raise UserError(
            f"Adapter {path} has other shapes than this model's method ({first}); "
            "it comes from another base model or other hyperparameters."
        ) from None
