"""SSF: learnable scale and shift after every layer of the adapted blocks.

Uses micro-sam's ``SSFSurgery``; its scales start at N(1, 0.2), so the
adapted model differs from the base model before training. Scale and shift
follow a linear or LayerNorm layer, so they fold exactly into its weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from micro_sam.models.peft_sam import ScaleShiftLayer, SSFSurgery
from torch import nn

from ._registry import register_method
from .base import BlockwiseConfig


@dataclass(kw_only=True)
class SSFConfig(BlockwiseConfig):
    method: ClassVar[str] = "ssf"
    title: ClassVar[str] = "SSF"
    summary: ClassVar[str] = "Scale-and-shift of every layer's features."
    zero_init: ClassVar[bool] = False


def inject_ssf(sam: nn.Module, cfg: SSFConfig) -> None:
    blocks = sam.image_encoder.blocks
    for i in cfg.blocks_for(len(blocks)):
        SSFSurgery(rank=0, block=blocks[i])


@torch.no_grad()
def _fold(wrapper: ScaleShiftLayer) -> nn.Module:
    layer, scale, shift = wrapper.layer, wrapper.scale, wrapper.shift
    if isinstance(layer, nn.Linear):
        layer.weight.mul_(scale[:, None])
    else:  # LayerNorm: y = norm(x) * w + b
        layer.weight.mul_(scale)
    if layer.bias is None:
        layer.bias = nn.Parameter(shift.clone())
    else:
        layer.bias.mul_(scale).add_(shift)
    return layer


def merge_ssf(sam: nn.Module, cfg: SSFConfig) -> None:
    for block in sam.image_encoder.blocks:
        for parent, name in (
            (block.attn, "qkv"),
            (block.attn, "proj"),
            (block.mlp, "lin1"),
            (block.mlp, "lin2"),
            (block, "norm1"),
            (block, "norm2"),
        ):
            wrapper = getattr(parent, name)
            if isinstance(wrapper, ScaleShiftLayer):
                setattr(parent, name, _fold(wrapper))


def microsam_kwargs(cfg: SSFConfig, depth: int) -> dict:
    return {
        "peft_module": "SSFSurgery",
        "attention_layers_to_update": cfg.blocks_for(depth),
    }


register_method(SSFConfig, inject_ssf, merge_ssf, microsam_kwargs)
