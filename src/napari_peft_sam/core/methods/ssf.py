"""SSF: learnable scale and shift after every layer of the adapted blocks.

Uses micro-sam's ``SSFSurgery``; its scales start at N(1, 0.2), so the
adapted model differs from the base model before training. Scale and shift
follow a linear or LayerNorm layer, so they fold exactly into its weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._registry import register_method
from .base import BlockwiseConfig

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True)
class SSFConfig(BlockwiseConfig):
    method: ClassVar[str] = "ssf"
    title: ClassVar[str] = "SSF"
    summary: ClassVar[str] = "Scale-and-shift of every layer's features."
    zero_init: ClassVar[bool] = False


def inject_ssf(sam: nn.Module, cfg: SSFConfig) -> None:
    from micro_sam.models.peft_sam import SSFSurgery

    blocks = sam.image_encoder.blocks
    for i in cfg.blocks_for(len(blocks)):
        SSFSurgery(rank=0, block=blocks[i])


def _fold(wrapper) -> nn.Module:
    """A ``ScaleShiftLayer``'s layer with its scale and shift folded in."""
    from torch import nn

    layer, scale, shift = wrapper.layer, wrapper.scale.detach(), wrapper.shift.detach()
    weight = layer.weight.detach()
    if isinstance(layer, nn.Linear):
        weight.mul_(scale[:, None])
    else:  # LayerNorm: y = norm(x) * w + b
        weight.mul_(scale)
    if layer.bias is None:
        layer.bias = nn.Parameter(shift.clone())
    else:
        layer.bias.detach().mul_(scale).add_(shift)
    return layer


def merge_ssf(sam: nn.Module, cfg: SSFConfig) -> None:
    from micro_sam.models.peft_sam import ScaleShiftLayer

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
