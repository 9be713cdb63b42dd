"""Every run folder under the home folder, finished, stopped or failed, with its score.

Reads the run cards only (plain JSON, no torch), so the GUI can list runs at
start-up and after a restart; a folder whose card cannot be read is skipped,
never an error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .catalog import PRIMARY
from .runfolder import CARD

MAX_DEPTH = 4  # home/sweeps/<sweep>/<point>/<seed>: deep enough, never the whole disk


def _cards(home: Path):
    base = len(home.parts)
    for root, dirs, files in os.walk(home):
        if CARD in files:
            dirs.clear()  # a run folder holds no other runs
            yield Path(root)
        elif len(Path(root).parts) - base >= MAX_DEPTH:
            dirs.clear()


def run_row(run_dir: Path) -> dict[str, Any] | None:
    """What a list of runs shows of ``run_dir``; None if its card is unreadable."""
    try:
        card = json.loads((run_dir / CARD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict):
        return None

    def part(key: str) -> dict:
        value = card.get(key)
        return value if isinstance(value, dict) else {}

    metrics = part("metrics")
    score = metrics.get(PRIMARY)
    return {
        "run_dir": str(run_dir),
        "name": run_dir.name,
        "status": str(card.get("status") or "unknown"),
        "model": part("base_model").get("name"),
        "method": part("method").get("method"),
        "steps": card.get("steps"),
        "score": score if isinstance(score, (int, float)) else None,
        "created": str(card.get("created") or ""),
    }


def list_runs(home: str | os.PathLike) -> list[dict[str, Any]]:
    """Every readable run under ``home``, oldest first."""
    home = Path(home)
    if not home.is_dir():
        return []
    rows = [row for d in _cards(home) if (row := run_row(d)) is not None]
    return sorted(rows, key=lambda r: (r["created"], r["run_dir"]))
