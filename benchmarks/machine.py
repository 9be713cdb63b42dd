"""The machine a benchmark ran on: its summary for the JSON line and a file-name slug.

Every benchmark's last line is one JSON object with a ``machine`` entry, and
``results/`` keeps one file per benchmark and machine, named by ``slug()``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def summary() -> dict:
    """CPU model, cores, threads, the flags that decide precision, torch, GPU."""
    from napari_peft_sam.core.device import machine_summary

    return machine_summary()


def slug(info: dict | None = None) -> str:
    """A short file-name part, e.g. ``amd-epyc-2c-bf16`` or ``nvidia-h100-cuda``."""
    info = info or summary()
    if info.get("gpu"):
        name = re.sub(r"nvidia|geforce|corporation", "", info["gpu"].lower())
        return f"{re.sub(r'[^a-z0-9]+', '-', name).strip('-')}-cuda"
    cpu = re.sub(r"\(r\)|\(tm\)|processor|cpu|@.*", "", str(info["cpu"]).lower())
    cpu = re.sub(r"[^a-z0-9]+", "-", cpu).strip("-") or "cpu"
    flags = (
        "-amx" if info.get("amx_bf16") else "-bf16" if info.get("avx512_bf16") else ""
    )
    return f"{cpu}-{info['cores']}c{flags}"


def save(name: str, result: dict) -> Path:
    """Write ``result`` to ``results/<name>_<slug>.json``; returns the path."""
    path = RESULTS / f"{name}_{slug(result.get('machine'))}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
