"""LayerNorm tuning: train only the norms of the blocks (``LayerNormSurgery``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._registry import register_method
from ._selective import no_merge_needed, surgery_kwargs, unfreeze_blocks
from .base import BlockwiseConfig

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True)
class LayerNormConfig(BlockwiseConfig):
    method: ClassVar[str] = "layernorm"
    title: ClassVar[str] = "LayerNorm tuning"
    summary: ClassVar[str] = "Train only the LayerNorm weights of the adapted blocks."


def inject_layernorm(sam: nn.Module, cfg: LayerNormConfig) -> None:
    unfreeze_blocks(sam, cfg, "LayerNormSurgery")


register_method(
    LayerNormConfig,
    inject_layernorm,
    no_merge_needed,
    surgery_kwargs("LayerNormSurgery"),
)
