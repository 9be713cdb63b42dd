"""Config dataclasses of PEFT methods, with typed, range-checked knobs.

Every hyperparameter is a dataclass field whose metadata holds a :class:`Knob`
(kind, range, choices, help). The CLI's ``--set``, the GUI form, the sweep grid
and the run card are all generated from these fields, so a knob is defined in
exactly one place.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from napari_peft_sam.core.errors import ConfigError

_NONE_WORDS = {"none", "null", ""}


@dataclass(frozen=True)
class Knob:
    """What a hyperparameter accepts.

    kind is one of ``int``, ``float``, ``bool``, ``choice`` (one string of
    ``choices``), ``subset`` (a non-empty tuple of ``choices``) or ``ints``
    (a tuple of integers). ``literals`` are strings accepted besides numbers
    (AdaptFormer's ``learnable``); ``optional`` admits None.
    """

    kind: str
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    literals: tuple[str, ...] = ()
    optional: bool = False

    def describe_range(self) -> str:
        """The valid values in words, e.g. '>= 0 and < 1, or none'."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "subset":
            return "a non-empty selection of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        bounds = [">= 0"] if self.kind == "ints" else []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        extras = [repr(w) for w in self.literals] + (["none"] if self.optional else [])
        return ", or ".join(filter(None, [" and ".join(bounds), *extras]))

    def expectation(self) -> str:
        noun = {
            "int": "an integer",
            "float": "a number",
            "ints": "a list of block indices",
        }.get(self.kind, "")
        return " ".join(filter(None, [noun, self.describe_range()]))


def hp(default: Any, help: str, kind: str, **knob: Any) -> Any:
    """Declare a hyperparameter field (default, help text and valid range)."""
    return field(default=default, metadata={"knob": Knob(kind, help, **knob)})


def _fail(method: str, name: str, knob: Knob, value: Any) -> ConfigError:
    return ConfigError(f"{method}: {name} must be {knob.expectation()}, got {value!r}.")


def _split(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v.strip() for v in value.replace("+", ",").split(",") if v.strip()]
    if isinstance(value, Sequence):
        return list(value)
    return [value]


def _number(value: Any, integer: bool) -> float | int:
    if isinstance(value, bool):
        raise ValueError("bool is not a number")
    number = float(value)
    if integer:
        if not number.is_integer():
            raise ValueError("not an integer")
        return int(number)
    return number


def coerce(method: str, name: str, knob: Knob, value: Any) -> Any:
    """Convert ``value`` (a Python value or a string from the CLI) and check it."""
    if value is None or (isinstance(value, str) and value.lower() in _NONE_WORDS):
        if knob.optional:
            return None
        raise _fail(method, name, knob, value)
    if isinstance(value, str) and value in knob.literals:
        return value
    try:
        if knob.kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, (bool, int)):
                raise ValueError(value)
            return bool(value)
        if knob.kind == "choice":
            if value not in knob.choices:
                raise ValueError(value)
            return value
        if knob.kind == "subset":
            items = tuple(dict.fromkeys(_split(value)))
            if not items or any(item not in knob.choices for item in items):
                raise ValueError(value)
            return items
        if knob.kind == "ints":
            items = tuple(sorted({_number(v, integer=True) for v in _split(value)}))
            if not items or any(i < 0 for i in items):
                raise ValueError(value)
            return items
        number = _number(value, integer=knob.kind == "int")
    except (TypeError, ValueError):
        raise _fail(method, name, knob, value) from None
    if math.isnan(number) or not _in_range(number, knob):
        raise _fail(method, name, knob, value)
    return number


def _in_range(x: float, knob: Knob) -> bool:
    if knob.low is not None and (x <= knob.low if knob.low_open else x < knob.low):
        return False
    return not (
        knob.high is not None and (x >= knob.high if knob.high_open else x > knob.high)
    )


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
        for f in dataclasses.fields(self):
            knob = f.metadata.get("knob")
            if knob is not None:
                value = coerce(self.method, f.name, knob, getattr(self, f.name))
                setattr(self, f.name, value)

    # -- generated interfaces ------------------------------------------------

    @classmethod
    def knobs(cls) -> dict[str, tuple[Knob, Any]]:
        """Map of hyperparameter name to (knob, default)."""
        return {
            f.name: (f.metadata["knob"], f.default)
            for f in dataclasses.fields(cls)
            if "knob" in f.metadata
        }

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
                {
                    "name": name,
                    "kind": knob.kind,
                    "default": list(default) if isinstance(default, tuple) else default,
                    "range": knob.describe_range(),
                    "choices": list(knob.choices),
                    "low": knob.low,
                    "high": knob.high,
                    "optional": knob.optional,
                    "literals": list(knob.literals),
                    "help": knob.help,
                }
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
