"""PEFT methods for SAM: a registry of config dataclasses and injectors.

Importing this package registers every method. ``apply_method`` freezes the
image encoder, lets the method unfreeze or add what it trains, and sets the
prompt encoder and mask decoder trainable unless the config freezes them
(micro-sam trains both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# import order is the order `napari-peft-sam methods` lists them in
from . import (  # noqa: F401  (each import registers its method)
    lora,
    qlora,
    adaptformer,
    fact,
    ssf,
    bias,
    layernorm,
    attention,
    late_ft,
    full,
    freeze_encoder,
)

from ._registry import MethodSpec, available_methods, get_method
from .base import MethodConfig

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "MethodConfig",
    "MethodSpec",
    "apply_method",
    "available_methods",
    "get_method",
    "make_config",
    "trainable_state",
    "count_trainable",
]


def make_config(method: str, values: dict[str, Any] | None = None) -> MethodConfig:
    """The config of ``method`` with ``values`` (strings are parsed) applied."""
    return get_method(method).config_cls.from_dict(dict(values or {}))


def config_from_dict(values: dict[str, Any]) -> MethodConfig:
    """Inverse of ``MethodConfig.to_dict``: dispatches on the ``method`` tag."""
    values = dict(values)
    return make_config(values.pop("method"), values)


def apply_method(sam: nn.Module, cfg: MethodConfig) -> nn.Module:
    """Inject ``cfg``'s method into ``sam`` in place and set what trains."""
    spec = get_method(cfg.method)
    spec.config_cls.from_dict(cfg.to_dict())  # re-validate edited configs
    cfg.blocks_for(len(sam.image_encoder.blocks))  # block range, before surgery
    sam.image_encoder.requires_grad_(False)
    spec.inject(sam, cfg)
    sam.train(sam.training)  # new modules (dropout!) follow the model's mode
    sam.prompt_encoder.requires_grad_(not cfg.freeze_prompt_encoder)
    sam.mask_decoder.requires_grad_(not cfg.freeze_mask_decoder)
    sam.peft_config = cfg
    return sam


def trainable_state(model: nn.Module) -> dict[str, Any]:
    """The tensors that train: exactly what an adapter file holds."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
