"""Repeated training seeds: means, 95 % confidence intervals, and which points
cannot be told apart from the best.

A *point* is a set of runs that differ only in their training seed: same study,
data, base model, method, grid values and training settings. Per point and
metric: the mean over seeds and the half-width of its 95 % confidence interval
(Student t with n - 1 degrees of freedom). A point is *indistinguishable* from
the best one (the highest mean among points with at least two seeds) when a
paired t-test over the seeds both ran (same seed = same data order, prompts and
initialisation) does not reject equal means, two-sided at alpha = 0.05. Each
point is tested against the best on its own, with no correction for the number
of points, and the best is itself picked from the data: with many points, some
are marked distinguishable by chance. Read the marks as a guide, not a proof.

Torch-free and scipy-free (the Student t distribution for whole degrees of
freedom has a closed form), so the Results panel can use it without delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

ALPHA = 0.05
LEVEL = 0.95
TEST = "paired t-test over seeds, two-sided, alpha 0.05"
INTERVAL = "95 % confidence interval, Student t over seeds"
# training settings that do not change what a run learns
BOOKKEEPING = frozenset({"checkpoint_interval"})


def t_within(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (a whole number >= 1) degrees of freedom.

    Abramowitz & Stegun 26.7.3 / 26.7.4: finite sums in cos(theta).
    """
    t = abs(t)
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 1:
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        body = s * math.cos(theta) * total if df > 1 else 0.0
        return 2 / math.pi * (theta + body)
    term, total = 1.0, 1.0
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| <= t) = ``level`` (e.g. 0.95 gives the 97.5 % quantile)."""
    low, high = 0.0, 1.0
    while t_within(high, df) < level:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if t_within(mid, df) < level else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Summary:
    """Mean, half-width of the 95 % interval (None with one value), count."""

    mean: float
    half: float | None
    n: int


def summarise(values: list[float]) -> Summary | None:
    """Mean and 95 % confidence half-width of ``values`` (None when empty)."""
    values = [float(v) for v in values if v is not None and not math.isnan(v)]
    n = len(values)
    if n == 0:
        return None
    mean = sum(values) / n
    if n == 1:
        return Summary(mean, None, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(mean, t_quantile(LEVEL, n - 1) * sd / math.sqrt(n), n)


def paired_p(a: dict[Any, float], b: dict[Any, float]) -> float | None:
    """Two-sided p-value of a paired t-test over the seeds ``a`` and ``b`` share.

    None with fewer than two shared seeds (nothing to test).
    """
    common = [s for s in a if s in b]
    if len(common) < 2:
        return None
    diffs = [a[s] - b[s] for s in common]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    return 1.0 - t_within(mean / (sd / math.sqrt(n)), n - 1)


# -- points: runs that differ only in their seed ------------------------------------


def seed_of(row: dict) -> Any:
    """A run's training seed: the grid's ``seed``, else its recorded setting."""
    return row["params"].get("seed", row.get("settings", {}).get("seed"))


def describe(row: dict) -> dict[str, Any]:
    """Everything that decides what a run learns, as flat named values: data,
    base model, method, grid values, method hyperparameters and training
    settings (the seed and bookkeeping settings left out)."""
    values = {k: row.get(k) for k in ("dataset", "model", "method")}
    values |= row["params"]
    for part in ("hyperparameters", "settings"):
        for k, v in (row.get(part) or {}).items():
            values.setdefault(k, v)
    return {k: v for k, v in values.items() if k != "seed" and k not in BOOKKEEPING}


def context(row: dict, leave_out: tuple[str, ...] = ()) -> tuple:
    """What must match for two runs to be compared: :func:`describe` without
    ``leave_out`` (e.g. the two hyperparameters a heatmap plots)."""
    return _frozen({k: v for k, v in describe(row).items() if k not in leave_out})


def _frozen(values: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in values.items()))


@dataclass
class Point:
    """The runs of one grid point over its seeds, and their summaries per metric."""

    study: str | None
    params: dict[str, Any]
    rows: list[dict] = field(default_factory=list)

    def by_seed(self, metric: str) -> dict[Any, float]:
        """``metric`` per seed (the mean where one seed ran more than once)."""
        values: dict[Any, list[float]] = {}
        for row in self.rows:
            value = row["metrics"].get(metric)
            if value is not None:
                values.setdefault(seed_of(row), []).append(float(value))
        return {s: sum(v) / len(v) for s, v in values.items()}

    def summary(self, metric: str) -> Summary | None:
        return summarise(list(self.by_seed(metric).values()))

    @property
    def n(self) -> int:
        return len({seed_of(r) for r in self.rows})


def points(rows: list[dict]) -> list[Point]:
    """Completed runs grouped into points (first appearance order)."""
    out: dict[tuple, Point] = {}
    for row in rows:
        if row.get("status", "complete") != "complete":
            continue
        key = (row.get("study"), context(row))
        if key not in out:
            params = {k: v for k, v in row["params"].items() if k != "seed"}
            out[key] = Point(row.get("study"), params)
        out[key].rows.append(row)
    return list(out.values())


def marks(group: list[Point], metric: str) -> dict[int, str]:
    """``{index: "best" | "tie"}`` over ``group``: the highest mean among points
    with two or more seeds, and every such point the paired test cannot tell
    apart from it. Empty when no point has two seeds."""
    means = {
        i: s.mean
        for i, p in enumerate(group)
        if p.n >= 2 and (s := p.summary(metric)) is not None
    }
    if len(means) < 2:
        return {}
    best = max(means, key=means.get)
    out = {best: "best"}
    reference = group[best].by_seed(metric)
    for i in means:
        if i != best:
            p = paired_p(reference, group[i].by_seed(metric))
            if p is not None and p >= ALPHA:
                out[i] = "tie"
    return out
