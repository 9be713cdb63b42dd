"""LoRA on the image encoder, extending micro-sam's ``AttentionLoRA``/``MLPLoRA``.

micro-sam hard-codes the update's scale to 1 and has no dropout. The modules
here subclass micro-sam's, keep its parameter names (so a run exports to a
checkpoint micro-sam loads) and add a configurable scale and input dropout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._registry import register_method
from .base import BlockwiseConfig, hp, second_half

if TYPE_CHECKING:
    from torch import nn

SCALINGS = ("alpha", "alpha/rank", "alpha/sqrt(rank)")


@dataclass(kw_only=True)
class LoraConfig(BlockwiseConfig):
    method: ClassVar[str] = "lora"
    title: ClassVar[str] = "LoRA"
    summary: ClassVar[str] = "Low-rank updates of the attention (and MLP) weights."

    rank: int = hp(32, "Rank of the low-rank update.", "int", low=1, high=4096)
    alpha: float = hp(
        1.0,
        "Scale of the update (how it enters depends on 'scaling').",
        "float",
        low=0.0,
        low_open=True,
    )
    scaling: str = hp(
        "alpha",
        "alpha: update x alpha (PEFT-SAM, micro-sam); alpha/rank: HF PEFT; "
        "alpha/sqrt(rank): rsLoRA.",
        "choice",
        choices=SCALINGS,
    )
    dropout: float = hp(
        0.0,
        "Dropout on the LoRA branch's input.",
        "float",
        low=0.0,
        high=1.0,
        high_open=True,
    )
    targets: tuple[str, ...] = hp(
        ("q", "v"),
        "Weights to adapt: any of q, k, v, mlp.",
        "subset",
        choices=("q", "k", "v", "mlp"),
    )

    def effective_scale(self) -> float:
        if self.scaling == "alpha/rank":
            return self.alpha / self.rank
        if self.scaling == "alpha/sqrt(rank)":
            return self.alpha / math.sqrt(self.rank)
        return self.alpha


@dataclass(kw_only=True)
class LateLoraConfig(LoraConfig):
    method: ClassVar[str] = "late_lora"
    title: ClassVar[str] = "Late LoRA"
    summary: ClassVar[str] = (
        "PEFT-SAM preset: LoRA on q, k, v and MLP of the second half of the blocks."
    )
    targets: tuple[str, ...] = hp(
        ("q", "k", "v", "mlp"),
        "Weights to adapt: any of q, k, v, mlp.",
        "subset",
        choices=("q", "k", "v", "mlp"),
    )

    def default_blocks(self, depth: int) -> list[int]:
        return second_half(depth)


def inject_lora(sam: nn.Module, cfg: LoraConfig) -> None:
    """Wrap the chosen blocks' qkv (and MLP) with trainable low-rank updates."""
    from ._lora_layers import ScaledAttentionLoRA, ScaledMLPLoRA

    blocks = sam.image_encoder.blocks
    scale = cfg.effective_scale()
    qkv_targets = [t for t in cfg.targets if t != "mlp"]
    for i in cfg.blocks_for(len(blocks)):
        block = blocks[i]
        block.attn.qkv = ScaledAttentionLoRA(
            cfg.rank, block.attn.qkv, qkv_targets, scale, cfg.dropout
        )
        if "mlp" in cfg.targets:
            block.mlp = ScaledMLPLoRA(cfg.rank, block.mlp, scale, cfg.dropout)


def merge_lora(sam: nn.Module, cfg: LoraConfig) -> None:
    """Fold every update into the wrapped weights and unwrap (exact)."""
    import torch

    with torch.no_grad():
        _merge_lora(sam)


def _merge_lora(sam: nn.Module) -> None:
    from ._lora_layers import ScaledAttentionLoRA, ScaledMLPLoRA

    for block in sam.image_encoder.blocks:
        qkv = block.attn.qkv
        if isinstance(qkv, ScaledAttentionLoRA):
            weight = qkv.qkv_proj.weight
            for j, name in enumerate("qkv"):
                delta = qkv.delta(name)
                if delta is not None:
                    weight[j * qkv.dim : (j + 1) * qkv.dim] += delta
            block.attn.qkv = qkv.qkv_proj
        mlp = block.mlp
        if isinstance(mlp, ScaledMLPLoRA):
            mlp.mlp_layer.lin1.weight += mlp.delta(1)
            mlp.mlp_layer.lin2.weight += mlp.delta(2)
            block.mlp = mlp.mlp_layer


def microsam_lora_state(state: dict, cfg: LoraConfig) -> dict:
    """Fold the scale into the up-projections: micro-sam applies a scale of 1."""
    scale = cfg.effective_scale()
    return {k: v * scale if ".w_b_linear_" in k else v for k, v in state.items()}


def microsam_lora_kwargs(cfg: LoraConfig, depth: int) -> dict:
    return {
        "peft_module": "LoRASurgery",
        "rank": cfg.rank,
        "update_matrices": list(cfg.targets),
        "attention_layers_to_update": cfg.blocks_for(depth),
    }


register_method(
    LoraConfig, inject_lora, merge_lora, microsam_lora_kwargs, microsam_lora_state
)
register_method(
    LateLoraConfig, inject_lora, merge_lora, microsam_lora_kwargs, microsam_lora_state
)
