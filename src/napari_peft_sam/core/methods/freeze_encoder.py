"""Decoder-only training: the image encoder stays frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._registry import register_method
from ._selective import no_merge_needed
from .base import MethodConfig

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True)
class FreezeEncoderConfig(MethodConfig):
    method: ClassVar[str] = "freeze_encoder"
    title: ClassVar[str] = "Frozen encoder"
    summary: ClassVar[str] = "Train only the prompt encoder and mask decoder."


def inject_freeze_encoder(sam: nn.Module, cfg: FreezeEncoderConfig) -> None:
    """Nothing to add: the engine froze the encoder before calling this."""


def microsam_kwargs(cfg: FreezeEncoderConfig, depth: int) -> dict:
    return {}


register_method(
    FreezeEncoderConfig, inject_freeze_encoder, no_merge_needed, microsam_kwargs
)
