"""A metric over two hyperparameters, comparing like with like.

:func:`heatmap_data` decides what a heatmap shows; the PNG (:func:`draw`,
``report --heatmap``, the demo) and the Results panel only render it. A cell
is the mean over the runs of one grid point (its seeds). Runs are only ever
combined when they differ in nothing but the two plotted hyperparameters and
the seed: same data, base model, method, training settings and other grid
values (``stats.context``). Of the groups that qualify, the one filling the
most cells is shown (then the one with the most runs); every other run is
left out, with a line saying how many and what differs.

Torch-free; matplotlib is imported only to draw a PNG.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field

from . import stats
from .files import atomic_write, writing

MAX_DIFFERENCES = 3  # named in a left-out line


@dataclass(frozen=True)
class Cell:
    """One cell: mean over seeds, 95 % half-width (None with one seed), seeds,
    and ``mark``: "best", "tie" (indistinguishable from the best) or None."""

    mean: float
    half: float | None
    n: int
    mark: str | None = None


@dataclass
class HeatmapData:
    """What a heatmap shows: axes, cells keyed by (x value, y value), notes."""

    metric: str
    x: str
    y: str
    x_values: list = field(default_factory=list)
    y_values: list = field(default_factory=list)
    cells: dict[tuple, Cell] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    seeded: bool = False

    @property
    def title(self) -> str:
        return f"{self.metric} (mSA, mean over seeds)" if self.seeded else self.metric

    @property
    def legend(self) -> str:
        if not self.seeded:
            return "outlined: the best cell"
        return f"outlined: the best mean; ≈: indistinguishable from it ({stats.TEST})"


def _sort_key(value):
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def heatmap_data(table: list[dict], metric: str, x: str, y: str) -> HeatmapData:
    """The cells of ``metric`` over hyperparameters ``x`` and ``y`` (see the module)."""
    data = HeatmapData(metric, x, y)
    done = [
        r
        for r in table
        if r.get("status", "complete") == "complete"
        and r["metrics"].get(metric) is not None
    ]
    plotted = [r for r in done if x in r["params"] and y in r["params"]]
    if not plotted:
        from .errors import UserError

        raise UserError(
            f"No completed run has {metric} and both {x!r} and {y!r}; pick "
            "hyperparameters the sweep varied (see the table's columns)."
        )
    if len(done) > len(plotted):
        data.left_out.append(
            f"{_runs(len(done) - len(plotted))} left out: no {x} or {y} value"
        )
    groups: dict[tuple, list[dict]] = {}
    for row in plotted:
        groups.setdefault(stats.context(row, (x, y)), []).append(row)
    chosen = max(
        groups.values(),
        key=lambda g: (len({(r["params"][x], r["params"][y]) for r in g}), len(g)),
    )
    others = [r for r in plotted if all(r is not c for c in chosen)]
    if others:
        data.left_out.append(
            f"{_runs(len(others))} left out: other settings "
            f"({_differences(others, chosen[0], (x, y))})"
        )
    _fill(data, chosen)
    return data


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _fill(data: HeatmapData, rows: list[dict]) -> None:
    x, y = data.x, data.y
    data.x_values = sorted({r["params"][x] for r in rows}, key=_sort_key)
    data.y_values = sorted({r["params"][y] for r in rows}, key=_sort_key)
    by_cell: dict[tuple, stats.Point] = {}
    for row in rows:
        cell = (row["params"][x], row["params"][y])
        by_cell.setdefault(cell, stats.Point(None, {x: cell[0], y: cell[1]}))
        by_cell[cell].rows.append(row)
    keys = list(by_cell)
    points = [by_cell[k] for k in keys]
    data.seeded = any(p.n > 1 for p in points)
    marks = stats.marks(points, data.metric)
    summaries = [p.summary(data.metric) for p in points]
    if not marks:  # one seed: outline the best, test nothing
        marks = {max(range(len(points)), key=lambda i: summaries[i].mean): "best"}
    for i, key in enumerate(keys):
        s = summaries[i]
        data.cells[key] = Cell(s.mean, s.half, s.n, marks.get(i))


def _differences(others: list[dict], reference: dict, plotted: tuple) -> str:
    """'iterations 300 vs 80; lr 0.001 vs 0.0001' (left-out values vs shown)."""
    shown = stats.describe(reference)
    differ: dict[str, list] = {}
    for row in others:
        values = stats.describe(row)
        for key in dict.fromkeys([*values, *shown]):
            if key in plotted or values.get(key) == shown.get(key):
                continue
            seen = differ.setdefault(key, [])
            if values.get(key) not in seen:
                seen.append(values.get(key))
    parts = [
        f"{key} {', '.join(_text(v) for v in vals)} vs {_text(shown.get(key))}"
        for key, vals in list(differ.items())[:MAX_DIFFERENCES]
    ]
    more = len(differ) - MAX_DIFFERENCES
    return "; ".join(parts) + (f"; {more} more" if more > 0 else "")


def _text(value) -> str:
    if value is None:
        return "unset"
    return f"{value:g}" if isinstance(value, float) else str(value)


def cell_text(cell: Cell) -> str:
    """The number a cell shows: the mean, with ≈ when it ties with the best."""
    return f"{cell.mean:.3f}" + (" ≈" if cell.mark == "tie" else "")


def draw(data: HeatmapData, path) -> None:
    """Write ``data`` as a PNG (means, ≈ on ties, the best outlined, notes below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xs, ys = data.x_values, data.y_values
    grid = np.full((len(ys), len(xs)), np.nan)
    for (xv, yv), cell in data.cells.items():
        grid[ys.index(yv), xs.index(xv)] = cell.mean
    width = max(1.2 * len(xs) + 2.5, 4.5)
    notes = [
        line
        for note in (data.legend, *data.left_out)
        for line in textwrap.wrap(note, int(width * 15))
    ]
    size = (width, 0.8 * len(ys) + 1.8 + 0.15 * len(notes))
    fig, ax = plt.subplots(figsize=size, dpi=120)
    image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(xs)), [_text(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_text(v) for v in ys])
    ax.set_xlabel(data.x)
    ax.set_ylabel(data.y)
    ax.set_title(data.title)
    low, high = np.nanmin(grid), np.nanmax(grid)
    for (xv, yv), cell in data.cells.items():
        i, j = ys.index(yv), xs.index(xv)
        bright = high > low and (cell.mean - low) / (high - low) > 0.6
        ax.text(
            j,
            i,
            cell_text(cell),
            ha="center",
            va="center",
            color="k" if bright else "w",
        )
        if cell.mark == "best":
            ax.add_patch(
                plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2.5)
            )
    fig.colorbar(image, ax=ax)
    fig.tight_layout(rect=(0, 0.12 * len(notes) / size[1], 1, 1))
    fig.text(0.01, 0.01, "\n".join(notes), fontsize=7, va="bottom")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    with writing(path, "choose another --out"):
        atomic_write(path, lambda f: f.write(buffer.getvalue()))


def check_target(path, overwrite: bool = False, storage: str | None = None) -> None:
    """Refuse a PNG target that is a folder, the results store, a run's own
    file, in a missing folder, or exists without ``overwrite``."""
    from pathlib import Path

    from .errors import UserError
    from .export import is_run_file
    from .files import refuse_target

    path = Path(path)
    if storage and "://" not in storage and path.resolve() == Path(storage).resolve():
        raise UserError(f"{path} is the results store; choose another --out.")
    if is_run_file(path):
        raise UserError(f"{path} is one of a run's own files; choose another --out.")
    if not path.parent.is_dir():
        raise UserError(
            f"The folder {path.parent} does not exist; create it or choose another --out."
        )
    refuse_target(path, overwrite)
