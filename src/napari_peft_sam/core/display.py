"""How numbers look wherever a person reads them: GUI, reports, Markdown."""

from __future__ import annotations

import math
from typing import Any


def duration(seconds: float | None) -> str:
    """4:07, 1:02:03 or 12 s: seconds as a person reads them."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def number(value: Any, digits: int = 3) -> str:
    """A metric to ``digits`` decimals, counts with thousands separators, text as
    it is; None becomes a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return value_text(value)


def value_text(value: Any) -> str:
    """A hyperparameter's value in its one spelling: lists as 'q+v', floats short."""
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "–"
    return str(value)


def recipe_line(edited: dict[str, Any], whose: str = "") -> str:
    """'the model's recipe' or 'the model's recipe with <whose> iterations 7, lr 0.001'."""
    if not edited:
        return "the model's recipe"
    shown = ", ".join(f"{k} {value_text(v)}" for k, v in sorted(edited.items()))
    return f"the model's recipe with {whose} {shown}".replace("  ", " ")
