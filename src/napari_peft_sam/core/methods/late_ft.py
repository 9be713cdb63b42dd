"""Late fine-tuning: PEFT-SAM's preset that trains the second half of the blocks.

micro-sam's ``ClassicalSurgery`` unfreezes whole blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ._registry import register_method
from ._selective import no_merge_needed, surgery_kwargs, unfreeze_blocks
from .base import BlockwiseConfig, second_half

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True)
class LateFTConfig(BlockwiseConfig):
    method: ClassVar[str] = "late_ft"
    title: ClassVar[str] = "Late fine-tuning"
    summary: ClassVar[str] = (
        "PEFT-SAM preset: fully train the second half of the encoder blocks."
    )

    def default_blocks(self, depth: int) -> list[int]:
        return second_half(depth)


def inject_late_ft(sam: nn.Module, cfg: LateFTConfig) -> None:
    unfreeze_blocks(sam, cfg, "ClassicalSurgery")


register_method(
    LateFTConfig, inject_late_ft, no_merge_needed, surgery_kwargs("ClassicalSurgery")
)
