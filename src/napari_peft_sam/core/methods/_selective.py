"""Shared pieces of the selective methods, which unfreeze existing tensors.

They add no new modules, so a trained model is already a plain SAM: merging
is a no-op and micro-sam loads their weights with or without ``peft_kwargs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import MethodConfig

if TYPE_CHECKING:
    from torch import nn


def no_merge_needed(sam: nn.Module, cfg: MethodConfig) -> None:
    """Selective methods train the base tensors in place: nothing to fold."""


def unfreeze_blocks(sam: nn.Module, cfg: MethodConfig, surgery: str) -> None:
    """Apply micro-sam's ``SelectiveSurgery`` subclass ``surgery`` to the chosen blocks."""
    from micro_sam.models import peft_sam

    surgery = getattr(peft_sam, surgery)
    blocks = sam.image_encoder.blocks
    for i in cfg.blocks_for(len(blocks)):
        surgery(block=blocks[i])


def surgery_kwargs(name: str):
    def kwargs(cfg: MethodConfig, depth: int) -> dict:
        return {
            "peft_module": name,
            "attention_layers_to_update": cfg.blocks_for(depth),
        }

    return kwargs
