"""The metric catalog: every metric of the study, defined once.

Evaluation, the results store, the report, the presets, the CLI and every
widget derive their lists from :data:`METRICS`; no other module spells a
metric's name. The order of :data:`METRICS` is the column order of the
study's tables (``reference/seed_tables.md``): ais, single box, single point,
ib, ip, then amg where it was computed.

Torch-free and cheap to import (the CLI's ``--help`` and the GUI use it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One column of the results table (a mean segmentation accuracy).

    Attributes
    ----------
    name
        The column name, as in the study's tables and ``evaluate --json``.
    prompt
        ``"point"`` or ``"box"`` for the prompt metrics (the first prompt of
        every object), None for automatic segmentation.
    iterative
        True for ip / ib: the state after the last corrective-prompting round.
    automatic
        The automatic segmenter (``"ais"`` or ``"amg"``), None for prompts.
    needs_decoder
        Only a model trained with the AIS decoder can compute it.
    help
        One line for tooltips, ``--help`` and the docs.
    """

    name: str
    prompt: str | None
    iterative: bool
    automatic: str | None
    needs_decoder: bool
    help: str

    def __str__(self) -> str:
        return self.name


AIS = Metric(
    "ais",
    None,
    False,
    "ais",
    True,
    "automatic instance segmentation with the AIS decoder (UNETR + watershed)",
)
SINGLE_BOX = Metric(
    "single box", "box", False, None, False, "one box per object, first prediction"
)
SINGLE_POINT = Metric(
    "single point",
    "point",
    False,
    None,
    False,
    "one positive point (the object's centre) per object, first prediction",
)
IB = Metric(
    "ib",
    "box",
    True,
    None,
    False,
    "iterative prompting from a box: after the last of 8 rounds of corrective points",
)
IP = Metric(
    "ip",
    "point",
    True,
    None,
    False,
    "iterative prompting from a point: after the last of 8 rounds of corrective points",
)
AMG = Metric(
    "amg",
    None,
    False,
    "amg",
    False,
    "SAM's automatic mask generation (a grid of point prompts)",
)

METRICS: tuple[Metric, ...] = (AIS, SINGLE_BOX, SINGLE_POINT, IB, IP, AMG)
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
NAMES: tuple[str, ...] = tuple(BY_NAME)

PROMPT: tuple[str, ...] = tuple(m.name for m in METRICS if m.prompt)
"""The four prompt metrics (what a quick evaluation computes)."""
SEED: tuple[str, ...] = tuple(m.name for m in METRICS if m is not AMG)
"""The columns of the study's LoRA and AdaptFormer tables."""
PRIMARY = SINGLE_BOX.name
"""What a sweep optimises and the heatmap shows unless told otherwise."""

# The prompt metrics in pairs: the first round of a prompt kind and its last round.
PROMPT_PAIRS: tuple[tuple[Metric, Metric], ...] = (
    (SINGLE_POINT, IP),
    (SINGLE_BOX, IB),
)


def get(name: str) -> Metric:
    """The metric called ``name``; an unknown name raises a UserError."""
    try:
        return BY_NAME[name]
    except KeyError:
        from .errors import UserError

        raise UserError(
            f"Unknown metric {name!r}; choose from {', '.join(NAMES)}."
        ) from None


def parse(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Metric names from a comma-separated string or a list, checked and in order given."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [get(item.strip()).name for item in items if str(item).strip()]
    if not names:
        from .errors import UserError

        raise UserError(f"Name at least one metric: {', '.join(NAMES)}.")
    return list(dict.fromkeys(names))


def ordered(names) -> list[str]:
    """``names`` in the table's column order (unknown names dropped)."""
    wanted = set(names)
    return [m.name for m in METRICS if m.name in wanted]


def for_run(with_decoder: bool) -> list[str]:
    """What a finished run is evaluated on: the prompt metrics, ais with a decoder."""
    return ordered([*PROMPT, *([AIS.name] if with_decoder else [])])
