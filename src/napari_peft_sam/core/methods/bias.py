"""Bias tuning (BitFit): train only the bias terms (micro-sam's ``BiasSurgery``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._registry import register_method
from ._selective import no_merge_needed, surgery_kwargs, unfreeze_blocks
from .base import BlockwiseConfig

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True)
class BiasConfig(BlockwiseConfig):
    method: ClassVar[str] = "bias"
    title: ClassVar[str] = "Bias (BitFit)"
    summary: ClassVar[str] = "Train only the bias terms of the adapted blocks."


def inject_bias(sam: nn.Module, cfg: BiasConfig) -> None:
    unfreeze_blocks(sam, cfg, "BiasSurgery")


register_method(BiasConfig, inject_bias, no_merge_needed, surgery_kwargs("BiasSurgery"))
