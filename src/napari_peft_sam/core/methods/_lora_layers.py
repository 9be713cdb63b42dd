"""LoRA modules: micro-sam's ``AttentionLoRA``/``MLPLoRA`` with a scale and dropout.

Kept apart from ``lora.py`` so that importing the method registry (the CLI's
``--help``, ``methods --json``, the GUI's forms) does not import torch.
"""

from __future__ import annotations

import torch
from micro_sam.models.peft_sam import AttentionLoRA, MLPLoRA
from torch import nn


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
