"""LoRA on the image encoder, extending micro-sam's ``AttentionLoRA``/``MLPLoRA``.

micro-sam hard-codes the update's scale to 1 and has no dropout. The modules
here subclass micro-sam's, keep its parameter names (so a run exports to a
checkpoint micro-sam loads) and add a configurable scale and input dropout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from micro_sam.models.peft_sam import AttentionLoRA, MLPLoRA
from torch import nn

from ._registry import register_method
from .base import BlockwiseConfig, hp, second_half

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


class ScaledAttentionLoRA(AttentionLoRA):
    """micro-sam's AttentionLoRA with a configurable scale and input dropout."""

    def __init__(self, rank, qkv, targets, scale, dropout):
        super().__init__(rank=rank, block=qkv, update_matrices=list(targets))
        self.alpha = scale
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.qkv_proj(x).split(self.dim, dim=-1))
        x = self.lora_dropout(x)
        for i, name in enumerate("qkv"):
            down = getattr(self, f"w_a_linear_{name}", None)
            if down is not None:
                up = getattr(self, f"w_b_linear_{name}")
                parts[i] = parts[i] + self.alpha * up(down(x))
        return torch.cat(parts, dim=-1)

    def delta(self, name: str) -> torch.Tensor | None:
        """The update of the q, k or v weight, already scaled."""
        down = getattr(self, f"w_a_linear_{name}", None)
        if down is None:
            return None
        return self.alpha * getattr(self, f"w_b_linear_{name}").weight @ down.weight


class ScaledMLPLoRA(MLPLoRA):
    """micro-sam's MLPLoRA (which has no scale) with a scale and input dropout."""

    def __init__(self, rank, mlp, scale, dropout):
        super().__init__(rank=rank, mlp_layer=mlp)
        self.alpha = scale
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin1, lin2 = self.mlp_layer.lin1, self.mlp_layer.lin2
        x = lin1(x) + self.alpha * self.w_b_linear_1(
            self.w_a_linear_1(self.lora_dropout(x))
        )
        x = self.activation(x)
        return lin2(x) + self.alpha * self.w_b_linear_2(
            self.w_a_linear_2(self.lora_dropout(x))
        )

    def delta(self, i: int) -> torch.Tensor:
        up, down = getattr(self, f"w_b_linear_{i}"), getattr(self, f"w_a_linear_{i}")
        return self.alpha * up.weight @ down.weight


def inject_lora(sam: nn.Module, cfg: LoraConfig) -> None:
    """Wrap the chosen blocks' qkv (and MLP) with trainable low-rank updates."""
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


@torch.no_grad()
def merge_lora(sam: nn.Module, cfg: LoraConfig) -> None:
    """Fold every update into the wrapped weights and unwrap (exact)."""
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
