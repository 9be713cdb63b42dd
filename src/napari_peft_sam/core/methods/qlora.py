"""QLoRA: LoRA on an image encoder whose linear layers are quantised to 4 bit.

Needs CUDA and bitsandbytes; elsewhere injecting it raises one clear
sentence instead of an import error.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from napari_peft_sam.core.errors import MethodUnavailableError

from ._registry import register_method
from .lora import LoraConfig, inject_lora, microsam_lora_kwargs, microsam_lora_state

if TYPE_CHECKING:
    from torch import nn


@dataclass(kw_only=True)
class QLoraConfig(LoraConfig):
    method: ClassVar[str] = "qlora"
    title: ClassVar[str] = "QLoRA"
    summary: ClassVar[str] = "LoRA on a 4-bit quantised image encoder (CUDA only)."
    mergeable: ClassVar[bool] = False


def qlora_unavailable_reason() -> str | None:
    """Why QLoRA cannot run here, or None when it can."""
    import torch

    if not torch.cuda.is_available():
        return "QLoRA needs a CUDA GPU; use 'lora' on this machine."
    if importlib.util.find_spec("bitsandbytes") is None:
        return "QLoRA needs bitsandbytes: pip install bitsandbytes, or use 'lora'."
    return None


def _quantise_linears(encoder: nn.Module) -> None:
    import bitsandbytes as bnb
    from torch import nn

    for name, module in list(encoder.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        *path, leaf = name.split(".")
        parent = encoder.get_submodule(".".join(path)) if path else encoder
        layer = bnb.nn.Linear4bit(
            module.in_features, module.out_features, bias=module.bias is not None
        )
        layer.weight = bnb.nn.Params4bit(data=module.weight.data, requires_grad=False)
        if module.bias is not None:
            layer.bias = nn.Parameter(module.bias.data, requires_grad=False)
        setattr(parent, leaf, layer)


def inject_qlora(sam: nn.Module, cfg: QLoraConfig) -> None:
    reason = qlora_unavailable_reason()
    if reason:
        raise MethodUnavailableError(reason)
    _quantise_linears(sam.image_encoder)
    inject_lora(sam, cfg)


def microsam_kwargs(cfg: QLoraConfig, depth: int) -> dict:
    return {**microsam_lora_kwargs(cfg, depth), "quantize": True}


register_method(QLoraConfig, inject_qlora, None, microsam_kwargs, microsam_lora_state)
