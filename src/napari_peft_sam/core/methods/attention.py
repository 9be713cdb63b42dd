"""Attention tuning: train the attention weights of the adapted blocks.

micro-sam's ``AttentionSurgery`` unfreezes qkv and the output projection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._registry import register_method
from ._selective import no_merge_needed, surgery_kwargs, unfreeze_blocks
from .base import BlockwiseConfig

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True)
class AttentionConfig(BlockwiseConfig):
    method: ClassVar[str] = "attention"
    title: ClassVar[str] = "Attention tuning"
    summary: ClassVar[str] = (
        "Train the attention weights (qkv and projection) of the adapted blocks."
    )


def inject_attention(sam: nn.Module, cfg: AttentionConfig) -> None:
    unfreeze_blocks(sam, cfg, "AttentionSurgery")


register_method(
    AttentionConfig,
    inject_attention,
    no_merge_needed,
    surgery_kwargs("AttentionSurgery"),
)
