"""Rows of the results store -> tables (Markdown in the seed's format, CSV) and heatmaps.

With one run per grid point the tables are the seed's. When the runs carry a
training ``seed`` (a sweep with ``seeds: N``), the Markdown table has one row
per point: ``mean ± half-width`` of the 95 % confidence interval per metric,
the number of seeds, the best mean of each metric in bold and the points the
paired test cannot tell apart from it marked ≈ (``core.stats``); the CSV keeps
one row per run and adds the point's ``<metric> mean``, ``<metric> ci95``,
``<metric> vs best`` and ``n``.
"""

from __future__ import annotations

import csv
import io
import math

from . import catalog, stats
from .display import value_text
from .heatmap import HeatmapData, draw, heatmap_data
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
    """A cell in the seed's format: numbers to 6 significant digits, a missing
    value empty, a selection in its one spelling (``core.display.value_text``)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    return value_text(value)


def _metric(value) -> str:
    return "" if value is None else _fmt(float(value))


def _sort_key(value):
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def is_seeded(table: list[dict]) -> bool:
    """True when any completed run has a training ``seed`` among its grid values."""
    return any("seed" in r["params"] for r in table if r["status"] == "complete")


def _lines(header: list[str], body: list[list[str]]) -> list[str]:
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
    return lines


def _failures(table: list[dict]) -> list[str]:
    return [
        f"\nfailed: {_point_text(r['params'])}: {r['error']}"
        for r in table
        if r["status"] == "fail"
    ]


def _point_text(params: dict) -> str:
    """'alpha 1, rank 2, targets q+v': a grid point as a person reads it."""
    return ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(params.items())) or "-"


def markdown(table: list[dict]) -> str:
    """The seed's format: the sweep's hyperparameters, then ais ... ip (amg if any).

    With seeds: one row per point, ``n`` after the hyperparameters, cells
    ``mean ± half-width``, and a legend line (see the module).
    """
    if is_seeded(table):
        return _markdown_seeded(table)
    done = [r for r in table if r["status"] == "complete"]
    params, metrics = _param_columns(done), _metric_columns(done)
    done.sort(key=lambda r: tuple(_sort_key(r["params"].get(p)) for p in params))
    header = [DISPLAY.get(p, p) for p in params] + metrics
    body = [
        [_fmt(r["params"].get(p)) for p in params]
        + [_metric(r["metrics"].get(m)) for m in metrics]
        for r in done
    ]
    return "\n".join(_lines(header, body) + _failures(table))


LEGEND = (
    "mean ± half-width of the {interval} ({n} = seeds); bold: the best mean of a "
    "column among points with 2 or more seeds; ≈: not distinguishable from it "
    "({test})."
)


def point_marks(points: list[stats.Point], metrics: list[str]) -> dict:
    """``{(point index, metric): "best" | "tie"}``, compared within each study."""
    out = {}
    for study in dict.fromkeys(p.study for p in points):
        members = [i for i, p in enumerate(points) if p.study == study]
        for metric in metrics:
            found = stats.marks([points[i] for i in members], metric)
            out |= {(members[k], metric): mark for k, mark in found.items()}
    return out


def cell(summary: stats.Summary | None, mark: str | None = None) -> str:
    """``0.221 ± 0.012`` (bold when best, ``≈`` when tied; no ± with one seed)."""
    if summary is None:
        return ""
    text = f"{summary.mean:.3f}"
    if summary.half is not None:
        text += f" ± {summary.half:.3f}"
    return f"**{text}**" if mark == "best" else f"{text} ≈" if mark == "tie" else text


def _markdown_seeded(table: list[dict]) -> str:
    done = [r for r in table if r["status"] == "complete"]
    points = stats.points(done)
    params = [p for p in _param_columns(done) if p != "seed"]
    metrics = _metric_columns(done)
    marks = point_marks(points, metrics)
    order = sorted(
        range(len(points)),
        key=lambda i: tuple(_sort_key(points[i].params.get(p)) for p in params),
    )
    header = [DISPLAY.get(p, p) for p in params] + ["n"] + metrics
    body = [
        [_fmt(points[i].params.get(p)) for p in params]
        + [str(points[i].n)]
        + [cell(points[i].summary(m), marks.get((i, m))) for m in metrics]
        for i in order
    ]
    legend = LEGEND.format(interval=stats.INTERVAL, n="n", test=stats.TEST)
    return "\n".join([*_lines(header, body), "", legend, *_failures(table)])


def to_csv(table: list[dict]) -> str:
    """Every row with every field, flattened; with seeds also each run's point
    summary (``<metric> mean``, ``<metric> ci95``, ``<metric> vs best``, ``n``)."""
    params = _param_columns(table)
    fields = [
        "study",
        "trial",
        "status",
        "dataset",
        "model",
        "method",
        *(p for p in params if p not in ("dataset", "model", "method")),
        *catalog.NAMES,
        "trainable_parameters",
        "train_time_s",
        "peak_memory_mb",
        "iterations",
        "run_dir",
        "error",
    ]
    summaries = _point_columns(table) if is_seeded(table) else {}
    if summaries:
        fields += ["n"] + [
            f"{m} {part}" for m in catalog.NAMES for part in ("mean", "ci95", "vs best")
        ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in table:
        extra = summaries.get(id(r), {})
        writer.writerow({**r, **r["params"], **r["metrics"], **extra})
    return buffer.getvalue()


def _point_columns(table: list[dict]) -> dict[int, dict]:
    """Per run (by ``id``): its point's n, and per metric mean, ci95, vs best."""
    points = stats.points([r for r in table if r["status"] == "complete"])
    marks = point_marks(points, catalog.NAMES)
    out = {}
    for i, point in enumerate(points):
        values: dict = {"n": point.n}
        for m in catalog.NAMES:
            s = point.summary(m)
            values[f"{m} mean"] = None if s is None else s.mean
            values[f"{m} ci95"] = None if s is None else s.half
            values[f"{m} vs best"] = marks.get((i, m))
        out |= {id(r): values for r in point.rows}
    return out


def heatmap(table: list[dict], metric: str, x: str, y: str, path) -> HeatmapData:
    """A PNG of ``metric`` over two hyperparameters (``core.heatmap``): means
    over seeds, only runs that differ in nothing else; returns what it shows."""
    data = heatmap_data(table, metric, x, y)
    draw(data, path)
    return data


def point_rows(table: list[dict]) -> list[dict]:
    """One display row per point (the Results panel's grouped view).

    Each is its first run's row with the point's ``params`` (no seed), ``n``,
    its ``runs``, and per metric ``summaries`` (:class:`stats.Summary`) and
    ``marks`` ("best", "tie" or None); runs that did not complete follow as
    they are.
    """
    points = stats.points([r for r in table if r["status"] == "complete"])
    marks = point_marks(points, catalog.NAMES)
    out = []
    for i, point in enumerate(points):
        times = [r["train_time_s"] for r in point.rows if r.get("train_time_s")]
        out.append(
            point.rows[0]
            | {
                "params": dict(point.params),
                "n": point.n,
                "runs": point.rows,
                "summaries": {m: point.summary(m) for m in catalog.NAMES},
                "marks": {m: marks.get((i, m)) for m in catalog.NAMES},
                "train_time_s": sum(times) / len(times) if times else None,
            }
        )
    return out + [r for r in table if r["status"] != "complete"]
