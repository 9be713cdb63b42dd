"""Typed, range-checked settings ("knobs"): one description per setting.

A knob is the metadata of a dataclass field: its kind, valid range, choices
and help text. Method hyperparameters (``core.methods``) and training
settings (``core.config.TrainConfig``) are both described this way, so the
CLI flags, the GUI forms, the sweep grid and the run card are generated from
one definition. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

_NONE_WORDS = {"none", "null", ""}


def label(name: str) -> str:
    """How the GUI's forms label setting ``name``: ``n_objects`` -> ``n objects``."""
    return name.replace("_", " ")


def flag(name: str) -> str:
    """The CLI's flag of setting ``name``: ``n_objects`` -> ``--n-objects``."""
    return "--" + name.replace("_", "-")


def set_hint(name: str, value: Any) -> str:
    """Advice that names a setting for both surfaces: ``set n objects to 8
    (--n-objects 8)``."""
    return f"set {label(name)} to {value} ({flag(name)} {value})"


@dataclass(frozen=True)
class Knob:
    """What a hyperparameter accepts.

    kind is one of ``int``, ``float``, ``bool``, ``choice`` (one string of
    ``choices``), ``subset`` (a non-empty tuple of ``choices``), ``ints``
    (a tuple of integers) or ``text`` (a string matching ``pattern``).
    ``literals`` are strings accepted besides numbers (AdaptFormer's
    ``learnable``); ``optional`` admits None. ``flags`` are extra command-line
    spellings; ``advanced`` settings are folded away in the GUI.
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
    pattern: str | None = None
    flags: tuple[str, ...] = ()
    advanced: bool = False

    def describe_range(self) -> str:
        """The valid values in words, e.g. '>= 0 and < 1, or none'."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "subset":
            return "a non-empty selection of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "text":
            return "one of " + ", ".join(self.choices) if self.choices else "text"
        bounds = [">= 0"] if self.kind == "ints" else []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {_show(self.low)}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {_show(self.high)}")
        extras = [repr(w) for w in self.literals] + (["none"] if self.optional else [])
        return ", or ".join(filter(None, [" and ".join(bounds), *extras]))

    def expectation(self) -> str:
        noun = {
            "int": "an integer",
            "float": "a number",
            "ints": "a list of block indices",
        }.get(self.kind, "")
        return " ".join(filter(None, [noun, self.describe_range()]))


def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


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


def spelled(value: Any, knob: Knob | None = None) -> Any:
    """The one spelling of a setting's value wherever a row is stored, grouped or
    shown: a selection as text joined by '+' (``('q', 'v')``, ``['q', 'v']`` and
    ``'v+q'`` all become ``'q+v'``), anything else as it is.

    With ``knob`` a ``subset`` is ordered as its choices, ``ints`` ascending, and
    text such as the sweep grid's ``'q+v'`` is read as the selection it names.
    The result is hashable, so it can key a table's group or a heatmap's cell.
    """
    selection = knob is not None and knob.kind in ("subset", "ints")
    if selection and isinstance(value, str) and value.lower() not in _NONE_WORDS:
        value = _split(value)
    if not isinstance(value, (list, tuple)):
        return value
    items = list(dict.fromkeys(str(v) for v in value))
    if knob is not None and knob.kind == "subset":
        rank = {c: i for i, c in enumerate(knob.choices)}
        items.sort(key=lambda v: (rank.get(v, len(rank)), v))
    elif knob is not None and knob.kind == "ints":
        items.sort(key=lambda v: (0, float(v)) if _is_number(v) else (1, v))
    return "+".join(items)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    if knob.kind == "choice" and value in knob.choices:
        return value  # a choice may be called "none"
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
        if knob.kind == "text":
            if not isinstance(value, str) or (
                knob.pattern and not re.fullmatch(knob.pattern, value)
            ):
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
    if not math.isfinite(number) or not _in_range(number, knob):
        raise _fail(method, name, knob, value)
    return number


def _in_range(x: float, knob: Knob) -> bool:
    if knob.low is not None and (x <= knob.low if knob.low_open else x < knob.low):
        return False
    return not (
        knob.high is not None and (x >= knob.high if knob.high_open else x > knob.high)
    )


def knobs_of(cls) -> dict[str, tuple[Knob, Any]]:
    """Map of setting name to (knob, default) of a knob-described dataclass."""
    out = {}
    for f in dataclasses.fields(cls):
        if "knob" not in f.metadata:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        out[f.name] = (f.metadata["knob"], default)
    return out


def validate(obj, owner: str) -> None:
    """Coerce and check every knob field of ``obj`` in place."""
    for f in dataclasses.fields(obj):
        knob = f.metadata.get("knob")
        if knob is not None:
            setattr(obj, f.name, coerce(owner, f.name, knob, getattr(obj, f.name)))


def describe_knob(name: str, knob: Knob, default: Any) -> dict[str, Any]:
    """A JSON-ready description of one setting (forms, ``--json``, docs)."""
    return {
        "name": name,
        "kind": knob.kind,
        "default": list(default) if isinstance(default, tuple) else default,
        "range": knob.describe_range(),
        "choices": list(knob.choices),
        "low": knob.low,
        "high": knob.high,
        "optional": knob.optional,
        "literals": list(knob.literals),
        "advanced": knob.advanced,
        "help": knob.help,
    }
