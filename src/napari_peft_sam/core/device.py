"""Devices and precision: which device a run uses and which autocast dtype.

Evaluation, prompting and training all resolve the user's ``--device`` and
``--precision`` here, so they agree.
"""

from __future__ import annotations

import torch

from .errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; CUDA without a GPU is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no GPU is available; use --device cpu.")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 autocast on CUDA; float32 on the CPU (bf16 there is ~40x slower)."""
    if precision == "float32" or device.type != "cuda":
        return None
    return torch.bfloat16
