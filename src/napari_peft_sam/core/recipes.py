"""Training recipes per base model, and how a run's settings are resolved.

Every training setting resolves the same way in the CLI, the GUI, sweeps and
the demo: an explicit value (a flag, a form field the user changed, a sweep's
fixed setting or grid point) wins over the base model's recipe, which wins
over :class:`~napari_peft_sam.core.config.TrainConfig`'s default. The run
card records each value and where it came from.

The rule for a model name: micro-sam's models (``vit_b``, ``vit_b_lm``, ...)
and custom checkpoints of their architectures train with the PEFT-SAM study's
settings; the small CPU models (``demo``, ``tiny``, and checkpoints of their
architectures) with quick settings that learn a new domain in minutes on a
laptop. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import TrainConfig
from .errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """Recommended training settings of a family of base models."""

    name: str
    settings: dict[str, Any]
    why: str


STUDY = Recipe(
    "study",
    {
        "lr": 1e-5,
        "iterations": 5000,
        "n_objects": 25,
        "n_sub_iterations": 8,
        "patch_size": 512,
        "scheduler": "plateau",
    },
    "the PEFT-SAM study's settings for micro-sam's ViT models (AdamW 1e-5, 25 "
    "objects, 8 sub-iterations, 512 px patches, ReduceLROnPlateau); the study "
    "trained 50,000 steps, the sweep presets 5,000",
)
QUICK = Recipe(
    "quick",
    {
        "lr": 1e-3,
        "iterations": 500,
        "n_objects": 8,
        "n_sub_iterations": 2,
        "warmup": 20,
        "scheduler": "cosine",
        "val_interval": 50,
        "val_patches": 4,
        "checkpoint_interval": 25,
    },
    "quick CPU settings for the small models: a high rate with warm-up and "
    "cosine decay, few objects and sub-iterations per step",
)
TINY = Recipe(
    "quick (tiny)",
    {**QUICK.settings, "iterations": 100},
    "the quick settings, shortened for the random test model",
)

# Which recipe an architecture (the model name's family) trains with.
BY_ARCHITECTURE = {"vit_b": STUDY, "vit_l": STUDY, "vit_h": STUDY, "demo": QUICK}
BY_ARCHITECTURE["tiny"] = TINY


def recipe_for(model: str) -> Recipe:
    """The recipe of base model ``model`` (a micro-sam name, demo, tiny, or an
    architecture used with a custom checkpoint)."""
    family = "demo" if model == "demo" else "tiny" if model == "tiny" else model[:5]
    return BY_ARCHITECTURE.get(family, STUDY)


def resolve(
    explicit: dict[str, Any] | None, model: str
) -> tuple[TrainConfig, dict[str, str]]:
    """The training settings of a run on ``model``, and each value's source.

    ``explicit`` holds only what the user set (flags given, fields edited,
    a sweep's fixed settings and point). Returns the validated
    :class:`TrainConfig` and ``{setting: "explicit" | "recipe <name>" |
    "default"}``.
    """
    explicit = {k: v for k, v in (explicit or {}).items() if v is not None}
    unknown = sorted(set(explicit) - set(TrainConfig.knobs()))
    if unknown:
        raise ConfigError(
            f"train has no setting {unknown[0]!r}; it has: "
            f"{', '.join(TrainConfig.knobs())}."
        )
    recipe = recipe_for(model)
    values, sources = {}, {}
    for name in TrainConfig.knobs():
        if name in explicit:
            values[name], sources[name] = explicit[name], "explicit"
        elif name in recipe.settings:
            values[name], sources[name] = recipe.settings[name], f"recipe {recipe.name}"
        else:
            sources[name] = "default"
    config = TrainConfig(**values)
    # early stopping and validation cannot be rarer than the run is long
    if sources["val_interval"] != "explicit":
        config.val_interval = min(config.val_interval, config.iterations)
    return config, sources
