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


def profile(label: str, step, steps: int, cuda: bool = False, top: int = 12) -> list:
    """Profile ``steps`` calls of ``step``; its top ops by self CPU time.

    Prints the profiler's table (top 15) to stderr under ``label`` and returns
    the ``top`` ops as rows: name, self CPU ms per step, share of the total
    self CPU time and calls per step.
    """
    import sys

    import torch
    from torch.profiler import ProfilerActivity

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()
    print(f"--- profile: {label}, {steps} steps ---", file=sys.stderr)
    print(events.table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)
    total = sum(e.self_cpu_time_total for e in events) or 1
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {
            "op": e.key,
            "self_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 3),
            "share": round(e.self_cpu_time_total / total, 4),
            "calls_per_step": round(e.count / steps, 2),
        }
        for e in ranked[:top]
    ]
