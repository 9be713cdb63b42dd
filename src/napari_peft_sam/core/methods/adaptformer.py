"""AdaptFormer: a parallel bottleneck adapter beside each adapted block's MLP.

Uses micro-sam's ``AdaptFormer`` module unchanged, so results and checkpoints
match the PEFT-SAM study. Its ReLU bottleneck is not linear, so the update
cannot be merged into the base weights. micro-sam's forward also adds the
MLP's (normalised) input once more as a residual, so even with the zero-init
up-projection the adapted model differs from the base model before training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._registry import register_method
from .base import BlockwiseConfig, hp

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True)
class AdaptFormerConfig(BlockwiseConfig):
    method: ClassVar[str] = "adaptformer"
    title: ClassVar[str] = "AdaptFormer"
    summary: ClassVar[str] = "Bottleneck adapter in parallel to each block's MLP."
    mergeable: ClassVar[bool] = False
    zero_init: ClassVar[bool] = False  # micro-sam's extra residual, see above

    alpha: float | str = hp(
        "learnable",
        "Scale of the adapter branch: a number or 'learnable'.",
        "float",
        low=0.0,
        low_open=True,
        literals=("learnable",),
    )
    projection_size: int = hp(
        64, "Width of the adapter's bottleneck.", "int", low=1, high=65536
    )
    dropout: float | None = hp(
        None,
        "Dropout inside the bottleneck (none: no dropout layer).",
        "float",
        low=0.0,
        high=1.0,
        high_open=True,
        optional=True,
    )


def _module_kwargs(cfg: AdaptFormerConfig) -> dict:
    alpha = "learnable_scalar" if cfg.alpha == "learnable" else cfg.alpha
    return {
        "alpha": alpha,
        "dropout": cfg.dropout,
        "projection_size": cfg.projection_size,
    }


def inject_adaptformer(sam: nn.Module, cfg: AdaptFormerConfig) -> None:
    from micro_sam.models.peft_sam import AdaptFormer

    blocks = sam.image_encoder.blocks
    for i in cfg.blocks_for(len(blocks)):
        AdaptFormer(rank=0, block=blocks[i], **_module_kwargs(cfg))


def microsam_kwargs(cfg: AdaptFormerConfig, depth: int) -> dict:
    return {
        "peft_module": "AdaptFormer",
        "attention_layers_to_update": cfg.blocks_for(depth),
        **_module_kwargs(cfg),
    }


register_method(AdaptFormerConfig, inject_adaptformer, None, microsam_kwargs)
