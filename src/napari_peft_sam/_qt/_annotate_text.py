"""What the Annotate tab says about its set and the current image's effort."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.annotations import AnnotationSet

NEW_SET = "A new set: 'Add to set' creates it."


def set_summary(aset: AnnotationSet) -> tuple[str, str]:
    """The set's one-line summary and its effort per round (HTML lines)."""
    s = aset.summary()
    summary = (
        f"<b>{s['name']}</b> v{s['version']:04d}: {s['images']} images "
        f"({s['held_out']} held out, every {s['held_out_every']}th), "
        f"{s['objects']} objects, {s['round']} retrains."
    )
    rounds = "".join(
        f"<br>round {e['round']}: {e['clicks_per_object']:.1f} clicks, "
        f"{e['seconds_per_object'] or 0:.1f} s per object ({e['objects']} objects)"
        for e in aset.effort()
        if e["objects"]
    )
    return summary, rounds


def effort_line(effort: list[dict[str, Any]]) -> str:
    """Clicks and seconds per object on the current image."""
    if not effort:
        return "This image: no object committed yet."
    clicks = np.mean([e["clicks"] for e in effort])
    seconds = np.mean([e["seconds"] for e in effort])
    return (
        f"This image: {len(effort)} objects, {clicks:.1f} clicks and "
        f"{seconds:.1f} s per object."
    )
