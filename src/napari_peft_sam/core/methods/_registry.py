"""The PEFT method registry: one source of truth for every method's knobs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from napari_peft_sam.core.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from .base import MethodConfig

Injector = Callable[["nn.Module", "MethodConfig"], None]
KwargsFn = Callable[["MethodConfig", int], dict]
StateFn = Callable[[dict, "MethodConfig"], dict]


def _same_state(state: dict, cfg: MethodConfig) -> dict:
    return state


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its config class and the function that injects it.

    ``inject(sam, cfg)`` modifies ``sam`` in place. It is called after the
    whole image encoder has been frozen and must mark exactly the tensors the
    method trains with ``requires_grad=True``. ``merge(sam, cfg)`` folds the
    trained update into plain SAM modules (None where that is not exact).
    ``microsam_kwargs(cfg, depth)`` gives the ``peft_kwargs`` that
    ``micro_sam.util.get_sam_model`` needs (the module as its class name) and
    ``microsam_state`` adapts a state dict to micro-sam's conventions.
    """

    config_cls: type[MethodConfig]
    inject: Injector
    merge: Injector | None = None
    microsam_kwargs: KwargsFn | None = None
    microsam_state: StateFn = _same_state

    @property
    def name(self) -> str:
        return self.config_cls.method


_METHODS: dict[str, MethodSpec] = {}


def register_method(
    config_cls: type[MethodConfig],
    inject: Injector,
    merge: Injector | None = None,
    microsam_kwargs: KwargsFn | None = None,
    microsam_state: StateFn = _same_state,
) -> MethodSpec:
    """Register ``config_cls.method`` with the functions that implement it."""
    spec = MethodSpec(config_cls, inject, merge, microsam_kwargs, microsam_state)
    if config_cls.mergeable != (merge is not None):
        raise ValueError(f"{spec.name}: 'mergeable' disagrees with its merge function")
    name = spec.name
    if not (name.isidentifier() and name.islower()):
        raise ValueError(f"method name must be lower_snake, got {name!r}")
    if name in _METHODS:
        raise KeyError(f"PEFT method {name!r} is already registered")
    _METHODS[name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """Return the spec of method ``name``; unknown names raise ConfigError."""
    try:
        return _METHODS[name]
    except KeyError:
        known = ", ".join(sorted(_METHODS))
        raise ConfigError(
            f"Unknown PEFT method {name!r}; choose one of: {known}."
        ) from None


def available_methods() -> list[str]:
    """Names of all registered methods, in registration order."""
    return list(_METHODS)
