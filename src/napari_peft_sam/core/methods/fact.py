"""FacT: factor-tuning of q and v with a shared low-rank basis per block.

Uses micro-sam's ``FacTSurgery``. Its factors start from PyTorch's default
initialisation, not zero, so the adapted model differs from the base model
before training, as in micro-sam and the PEFT-SAM study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._registry import register_method
from .base import BlockwiseConfig, hp

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True)
class FacTConfig(BlockwiseConfig):
    method: ClassVar[str] = "fact"
    title: ClassVar[str] = "FacT"
    summary: ClassVar[str] = "Factor-tuning: q and v updates through a shared basis."
    zero_init: ClassVar[bool] = False

    rank: int = hp(16, "Rank of the factorisation.", "int", low=1, high=4096)
    dropout: float | None = hp(
        0.1,
        "Dropout on the factor cores (none: no dropout layer).",
        "float",
        low=0.0,
        high=1.0,
        high_open=True,
        optional=True,
    )


def inject_fact(sam: nn.Module, cfg: FacTConfig) -> None:
    from micro_sam.models.peft_sam import FacTSurgery

    blocks = sam.image_encoder.blocks
    for i in cfg.blocks_for(len(blocks)):
        FacTSurgery(rank=cfg.rank, block=blocks[i], dropout=cfg.dropout)


def merge_fact(sam: nn.Module, cfg: FacTConfig) -> None:
    import torch
    from micro_sam.models.peft_sam import FacTSurgery

    for block in sam.image_encoder.blocks:
        fact = block.attn.qkv
        if not isinstance(fact, FacTSurgery):
            continue
        u, v, dim = fact.FacTu.weight, fact.FacTv.weight, fact.dim
        weight = fact.qkv_proj.weight
        with torch.no_grad():
            weight[:dim] += v @ fact.q_FacTs.weight @ u
            weight[2 * dim :] += v @ fact.v_FacTs.weight @ u
        block.attn.qkv = fact.qkv_proj


def microsam_kwargs(cfg: FacTConfig, depth: int) -> dict:
    return {
        "peft_module": "FacTSurgery",
        "rank": cfg.rank,
        "dropout": cfg.dropout,
        "attention_layers_to_update": cfg.blocks_for(depth),
    }


register_method(FacTConfig, inject_fact, merge_fact, microsam_kwargs)
