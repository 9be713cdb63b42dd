"""Config dataclasses of PEFT methods, with typed, range-checked knobs.

Every hyperparameter is a dataclass field whose metadata holds a :class:`Knob`
(kind, range, choices, help). The CLI's ``--set``, the GUI form, the sweep grid
and the run card are all generated from these fields, so a knob is defined in
exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from napari_peft_sam.core.errors import ConfigError
from napari_peft_sam.core.knobs import Knob, describe_knob, hp, knobs_of, validate


@dataclass(kw_only=True)
class MethodConfig:
    """Base of every method's config; subclasses add their knobs.

    Class attributes describe the method: ``method`` (registry name),
    ``title``, ``zero_init`` (the adapted model equals the base model before
    training) and ``mergeable`` (the update folds exactly into plain SAM
    weights).
    """

    method: ClassVar[str] = ""
    title: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    zero_init: ClassVar[bool] = True
    mergeable: ClassVar[bool] = True

    freeze_prompt_encoder: bool = hp(
        False, "Keep the prompt encoder frozen (micro-sam trains it).", "bool"
    )
    freeze_mask_decoder: bool = hp(
        False, "Keep the mask decoder frozen (micro-sam trains it).", "bool"
    )

    def __post_init__(self) -> None:
        validate(self, self.method)

    # -- generated interfaces ------------------------------------------------

    @classmethod
    def knobs(cls) -> dict[str, tuple[Knob, Any]]:
        """Map of hyperparameter name to (knob, default)."""
        return knobs_of(cls)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MethodConfig:
        """Build a config from a mapping (strings are parsed); unknown keys fail."""
        knobs = cls.knobs()
        unknown = sorted(set(values) - set(knobs) - {"method"})
        if unknown:
            raise ConfigError(
                f"{cls.method} has no hyperparameter {unknown[0]!r}; "
                f"it has: {', '.join(knobs)}."
            )
        return cls(**{k: v for k, v in values.items() if k != "method"})

    def replace(self, **changes: Any) -> MethodConfig:
        """A copy with ``changes`` applied and validated."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including the ``method`` tag."""
        out: dict[str, Any] = {"method": self.method}
        for name in self.knobs():
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Everything ``napari-peft-sam methods --json`` shows for this method."""
        return {
            "method": cls.method,
            "title": cls.title,
            "summary": cls.summary,
            "zero_init": cls.zero_init,
            "mergeable": cls.mergeable,
            "hyperparameters": [
                describe_knob(name, knob, default)
                for name, (knob, default) in cls.knobs().items()
            ],
        }

    # -- what the engine asks of a method ------------------------------------

    def effective_scale(self) -> float | None:
        """The factor the low-rank update is multiplied by, where one exists."""
        return None

    def blocks_for(self, depth: int) -> list[int]:
        """The encoder blocks this method adapts, for an encoder of ``depth``."""
        return list(range(depth))


@dataclass(kw_only=True)
class BlockwiseConfig(MethodConfig):
    """A method applied to a chosen set of image-encoder blocks."""

    blocks: tuple[int, ...] | None = hp(
        None,
        "Image-encoder blocks to adapt, e.g. 6,7,8 (none: all blocks).",
        "ints",
        optional=True,
    )

    def default_blocks(self, depth: int) -> list[int]:
        return list(range(depth))

    def blocks_for(self, depth: int) -> list[int]:
        if self.blocks is None:
            return self.default_blocks(depth)
        bad = [b for b in self.blocks if b >= depth]
        if bad:
            raise ConfigError(
                f"{self.method}: blocks contains {bad[0]}, but this model's image "
                f"encoder has {depth} blocks (0 to {depth - 1})."
            )
        return list(self.blocks)


def second_half(depth: int) -> list[int]:
    """Blocks of the second half of the encoder (PEFT-SAM's 'late' presets)."""
    return list(range(depth // 2, depth))
