"""Sweep presets: the PEFT-SAM study's grids (reference/seed_tables.md) and the demo.

The study's settings: AdamW at lr 1e-5 unless the grid varies it, batch 2,
512 x 512 patches (resized to the model's 1024 input), 25 objects per image,
8 sub-iterations, ReduceLROnPlateau with patience 10. ``iterations`` is 5,000
per point here (the sweep estimate in sweep_perf.md); raise it with
``--set iterations=N`` for the study's full-length runs.
"""

from __future__ import annotations

from . import catalog, recipes
from .sweep import SweepSpec

_FACT_ORDER = (catalog.AIS, catalog.AMG, catalog.IP, catalog.IB)
# the columns of the study's FacT tables, in their order
FACT_METRICS = [
    m.name for m in (*_FACT_ORDER, catalog.SINGLE_POINT, catalog.SINGLE_BOX)
]

# The study's recipe, fixed in every point so a preset means the same runs
# whatever the base model's recipe says; batch 2 and the AIS decoder as the study.
STUDY = {**recipes.STUDY.settings, "batch_size": 2, "with_decoder": True}
STUDY_METRICS = list(catalog.SEED)


def _study(name, dataset, model, method, grid, fixed=None, metrics=None):
    return {
        "name": name,
        "dataset": dataset,
        "model": model,
        "method": method,
        "grid": grid,
        "fixed": {**STUDY, **(fixed or {})},
        "metrics": metrics or STUDY_METRICS,
    }


PRESETS = {
    "lora_rank_alpha": _study(
        "lora_rank_alpha",
        "orgasegment",
        "vit_b_lm",
        "lora",
        {"rank": [1, 2, 4, 8, 16, 32, 64], "alpha": [1, 2, 4]},
    ),
    "lora_lr_alpha_rank": _study(
        "lora_lr_alpha_rank",
        "orgasegment",
        "vit_b_lm",
        "lora",
        {"lr": [1e-3, 5e-4, 1e-4, 5e-5, 1e-5], "alpha": [1, 2, 4], "rank": [1, 32]},
    ),
    "lora_alpha": _study(
        "lora_alpha",
        "orgasegment",
        "vit_b_lm",
        "lora",
        {"alpha": [0.1, 0.25, 0.5, 0.75, 1, 2, 4]},
        {"rank": 32},
    ),
    "lora_alpha_datasets": _study(
        "lora_alpha_datasets",
        "orgasegment",
        "vit_b",
        "lora",
        [
            {
                "dataset": ["mitolab_glycolytic_muscle", "platy_cilia"],
                "model": ["vit_b", "vit_b_em_organelles"],
                "alpha": [0.1, 1, 8],
            },
            {
                "dataset": ["orgasegment", "covid_if"],
                "model": ["vit_b", "vit_b_lm"],
                "alpha": [0.1, 1, 8],
            },
        ],
        {"rank": 32},
    ),
    "adaptformer": _study(
        "adaptformer",
        "orgasegment",
        "vit_b_lm",
        "adaptformer",
        {
            "alpha": [0.1, 0.5, 1, "learnable"],
            "projection_size": [64, 128, 256],
            "dropout": [0.1, 0.25, 0.5, None],
        },
    ),
    "fact_dropout": _study(
        "fact_dropout",
        "livecell",
        "vit_b_lm",
        "fact",
        {"dropout": [0.25, None, 0.1, 0.5]},
        {"rank": 4},
        metrics=FACT_METRICS,
    ),
    "fact_rank": _study(
        "fact_rank",
        "livecell",
        "vit_b_lm",
        "fact",
        {"rank": [1, 2, 4, 8, 16, 32]},
        {"dropout": 0.1},
        metrics=FACT_METRICS,
    ),
    # Offline, on the CPU, in a few minutes: LoRA rank x alpha on the organoid
    # domain for the shipped demo model, with the demo model's recipe.
    "demo": {
        "name": "demo",
        "dataset": "organoids",
        "model": "demo",
        "method": "lora",
        "grid": {"rank": [2, 8], "alpha": [1, 4]},
        "fixed": {"targets": ["q", "v"]},
        "metrics": list(catalog.PROMPT),
    },
}


def preset(name: str) -> SweepSpec:
    from .errors import UserError

    if name not in PRESETS:
        raise UserError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return SweepSpec.from_dict(PRESETS[name])
