"""Full fine-tuning: every tensor of the image encoder trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._registry import register_method
from ._selective import no_merge_needed
from .base import MethodConfig

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True)
class FullConfig(MethodConfig):
    method: ClassVar[str] = "full"
    title: ClassVar[str] = "Full fine-tuning"
    summary: ClassVar[str] = (
        "Train the whole model (the reference PEFT is measured against)."
    )


def inject_full(sam: nn.Module, cfg: FullConfig) -> None:
    sam.image_encoder.requires_grad_(True)


def microsam_kwargs(cfg: FullConfig, depth: int) -> dict:
    return {}  # a plain SAM state dict: micro-sam needs no peft_kwargs


register_method(FullConfig, inject_full, no_merge_needed, microsam_kwargs)
