"""The model service's requests about models: what the GUI offers, and prompting.

The catalog the pickers show, a model's parameter counts and memory estimate,
and prompting a loaded model on a kept image (points and boxes, automatic
segmentation), with the loaded models and images cached between requests.
Runs in the service's process (``core.service``); registered with
``@serves`` (``core.service_ops``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from . import requests
from .errors import UserError
from .service_ops import serves


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
