"""Rows of the results store -> tables (Markdown in the seed's format, CSV) and heatmaps."""

from __future__ import annotations

import csv
import io
import math

from . import catalog
from .store import rows  # noqa: F401  (the table's rows; re-exported for callers)

# Column order and names of the study's tables (reference/seed_tables.md).
PARAM_ORDER = ("dataset", "model", "lr", "alpha", "projection_size", "dropout", "rank")
DISPLAY = {"model": "base model", "projection_size": "projection size"}


def _param_columns(table: list[dict]) -> list[str]:
    names = {k for r in table for k in r["params"]}
    return [n for n in PARAM_ORDER if n in names] + sorted(names - set(PARAM_ORDER))


def _metric_columns(table: list[dict]) -> list[str]:
    return catalog.ordered({k for r in table for k in r["metrics"]})


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None" if value is None else "NaN"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _metric(value) -> str:
    return "n/a" if value is None else _fmt(float(value))


def _sort_key(value):
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def markdown(table: list[dict]) -> str:
    """The seed's format: the sweep's hyperparameters, then ais ... ip (amg if any)."""
    done = [r for r in table if r["status"] == "complete"]
    params, metrics = _param_columns(done), _metric_columns(done)
    done.sort(key=lambda r: tuple(_sort_key(r["params"].get(p)) for p in params))
    header = [DISPLAY.get(p, p) for p in params] + metrics
    body = [
        [_fmt(r["params"].get(p)) for p in params]
        + [_metric(r["metrics"].get(m)) for m in metrics]
        for r in done
    ]
    widths = [
        max(len(h), *(len(row[i]) for row in body)) if body else len(h)
        for i, h in enumerate(header)
    ]
    lines = [
        "| "
        + " | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))
        + " |",
        "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in body
    ]
    failed = [r for r in table if r["status"] == "fail"]
    for r in failed:
        lines.append(f"\nfailed: {r['params']}: {r['error']}")
    return "\n".join(lines)


def to_csv(table: list[dict]) -> str:
    """Every row with every field, flattened."""
    params = _param_columns(table)
    fields = [
        "study",
        "trial",
        "status",
        "dataset",
        "model",
        "method",
        *params,
        *catalog.NAMES,
        "trainable_parameters",
        "train_time_s",
        "peak_memory_mb",
        "iterations",
        "run_dir",
        "error",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in table:
        writer.writerow({**r, **r["params"], **r["metrics"]})
    return buffer.getvalue()


def heatmap(table: list[dict], metric: str, x: str, y: str, path) -> None:
    """A PNG of ``metric`` over two hyperparameters (mean where points repeat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    done = [
        r
        for r in table
        if r["status"] == "complete" and r["metrics"].get(metric) is not None
    ]
    xs = sorted({r["params"].get(x) for r in done}, key=_sort_key)
    ys = sorted({r["params"].get(y) for r in done}, key=_sort_key)
    grid = np.full((len(ys), len(xs)), np.nan)
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            vals = [
                r["metrics"][metric]
                for r in done
                if r["params"].get(x) == xv and r["params"].get(y) == yv
            ]
            if vals:
                grid[i, j] = float(np.mean(vals))
    fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 2.5, 0.8 * len(ys) + 1.8), dpi=120)
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(xs)), [_fmt(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_fmt(v) for v in ys])
    ax.set_xlabel(DISPLAY.get(x, x))
    ax.set_ylabel(DISPLAY.get(y, y))
    ax.set_title(f"{metric} (mSA)")
    low, high = np.nanmin(grid), np.nanmax(grid)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if not np.isnan(grid[i, j]):
                bright = high > low and (grid[i, j] - low) / (high - low) > 0.6
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.3f}",
                    ha="center",
                    va="center",
                    color="k" if bright else "w",
                )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
