"""Sweep efficiency: the grid with repeated seeds against the search mode.

On the demo setting (demo model, organoids, LoRA on q and v, the demo recipe
shortened to ``--iterations`` steps), the 4 x 4 grid rank [1, 2, 4, 8] x
alpha [0.5, 1, 2, 4] runs with ``--seeds`` training seeds per point. Every
run also records the two intermediate values a search could stop on, at each
rung of 50 steps: the negative validation box loss, and single-box mSA of the
latest checkpoint on the validation images. Then:

1. the grid's best point (highest mean), its 95 % confidence interval and the
   points the paired test cannot tell apart from it (``core.stats``);
2. how well each intermediate value ranks the final metric (Spearman, over
   runs and over point means);
3. the search mode (``core.search``: TPE + successive halving, a budget of
   ``--budget`` of the grid's iterations) with each signal and ``--search-seeds``
   seeds: iterations used, the point it picks, and whether that point's grid
   mean lies within the grid best's interval (a hit);
4. the baseline a search must beat: one seed of the grid (a third of its cost).

The searches replay the grid's runs: a search trial of point p with seed k
gets exactly the curve and metric the grid's run (p, k) produced, because
training is deterministic given the seed (``--check N`` re-trains N grid runs
and compares; ``--train-search`` runs one search for real).

    python benchmarks/bench_sweep.py [--quick] [--workdir DIR] [--iterations 150]

The last line is one JSON object (also saved in results/sweep_demo_<machine>.json).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from napari_peft_sam.core import catalog, stats
from napari_peft_sam.core.presets import PRESETS
from napari_peft_sam.core.records import point_key
from napari_peft_sam.core.search import run_point_reporting
from napari_peft_sam.core.store import rows
from napari_peft_sam.core.sweep import SweepSpec
from napari_peft_sam.core.worker import run_worker

sys.path.insert(0, str(Path(__file__).parent))
from sweep_replay import (  # noqa: E402  (beside this script)
    VARIANTS,
    one_search,
    one_seed_grid,
    search_block,
)

METRIC = catalog.PRIMARY
SIGNALS = ("msa", "val_loss")
SIGNALS_FILE = "signals.json"


def spec_for(args) -> SweepSpec:
    values = dict(PRESETS["demo"])
    grid = {"rank": [1, 2, 4, 8], "alpha": [0.5, 1, 2, 4]}
    if args.quick:
        grid = {"rank": [1, 8], "alpha": [0.5, 4]}
    fixed = {**values["fixed"], "iterations": args.iterations}
    values |= {"name": "bench", "grid": grid, "fixed": fixed, "seeds": args.seeds}
    values["model"] = args.model
    return SweepSpec.from_dict(values | {"metrics": [METRIC]})


# -- the grid, recording both intermediate values ------------------------------------


def recording_runner(spec, point, run_dir, report=None, stop=None, on_event=None):
    """A grid run that also writes both intermediate values to signals.json."""
    signals = {name: {} for name in SIGNALS}

    def observe(event):
        if event.kind == "validation":
            signals["val_loss"][event.step] = -event.metrics["val_box_loss"]
        if on_event is not None:
            on_event(event)

    def keep(value, step):
        signals["msa"][step] = value

    record = run_point_reporting(spec, point, run_dir, keep, stop, observe, "msa")
    (Path(run_dir) / SIGNALS_FILE).write_text(json.dumps(signals))
    return record


def grid_runs(spec, workdir: Path) -> list[dict]:
    """Run (or finish) the grid; its rows, each with its ``signals``."""
    storage = str(workdir / "grid.journal")
    run_worker(storage, spec, workdir / "grid", runner=recording_runner)
    table = [r for r in rows(storage, [spec.name]) if r["status"] == "complete"]
    for row in table:
        raw = json.loads((Path(row["run_dir"]) / SIGNALS_FILE).read_text())
        row["signals"] = {k: {int(s): v for s, v in raw[k].items()} for k in raw}
    return table


def grid_summary(table: list[dict]) -> dict:
    """Best point, its interval, the points indistinguishable from it."""
    points = stats.points(table)
    marks = stats.marks(points, METRIC)
    best = next(i for i, m in marks.items() if m == "best")
    summary = points[best].summary(METRIC)
    means = {point_key(p.params): p.summary(METRIC).mean for p in points}
    return {
        "best_point": points[best].params,
        "best_mean": summary.mean,
        "best_ci95": summary.half,
        "n": summary.n,
        "indistinguishable": [points[i].params for i, m in marks.items() if m == "tie"],
        "means": means,
        "iterations": sum(r["iterations"] for r in table),
        "test": stats.TEST,
    }


def rank_correlations(table: list[dict]) -> dict:
    """Spearman of each intermediate value at each rung with the final metric."""
    from scipy.stats import spearmanr

    out = {}
    for signal in SIGNALS:
        steps = sorted({s for r in table for s in r["signals"][signal]})
        for step in steps:
            runs = [r for r in table if step in r["signals"][signal]]
            x = [r["signals"][signal][step] for r in runs]
            y = [r["metrics"][METRIC] for r in runs]
            by_point = _point_means(runs, signal, step)
            out[f"{signal}@{step}"] = {
                "runs": float(spearmanr(x, y).statistic),
                "points": float(spearmanr(*zip(*by_point, strict=True)).statistic),
            }
    return out


def _point_means(runs, signal, step):
    grouped: dict[str, list] = {}
    for r in runs:
        key = point_key({k: v for k, v in r["params"].items() if k != "seed"})
        grouped.setdefault(key, []).append(r)
    return [
        (
            sum(r["signals"][signal][step] for r in g) / len(g),
            sum(r["metrics"][METRIC] for r in g) / len(g),
        )
        for g in grouped.values()
    ]


def check_replay(spec, table, n, workdir) -> list[dict]:
    """Re-train ``n`` grid runs and compare their values with the recorded ones."""
    out = []
    for i, row in enumerate(random.Random(0).sample(table, n)):
        again = recording_runner(spec, dict(row["params"]), workdir / f"check{i}")
        signals = json.loads((workdir / f"check{i}" / SIGNALS_FILE).read_text())
        diff = max(
            abs(v - row["signals"][k][int(s)])
            for k in signals
            for s, v in signals[k].items()
        )
        metric = abs(again.metrics[METRIC] - row["metrics"][METRIC])
        out.append(
            {"params": row["params"], "max_signal_diff": diff, "metric_diff": metric}
        )
    return out


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    spec = spec_for(args)
    started = time.perf_counter()
    table = grid_runs(spec, workdir)
    grid = grid_summary(table)
    result = {"grid": grid, "grid_s": time.perf_counter() - started}
    result["rank_correlation"] = rank_correlations(table)
    result["one_seed_grid"] = one_seed_grid(table, grid)
    n_all = args.search_seeds + args.extra_search_seeds
    for signal in SIGNALS:
        result[f"search_{signal}"] = search_block(
            spec,
            table,
            grid,
            signal,
            args.budget,
            args.search_seeds,
            args.extra_search_seeds,
            workdir,
        )
        result[f"hit_rate_by_budget_{signal}"] = {
            fraction: search_block(
                spec,
                table,
                grid,
                signal,
                fraction,
                0,
                args.search_seeds + args.extra_search_seeds,
                workdir,
            )["hit_rate_all_seeds"]
            for fraction in args.budgets
        }
    result["variants"] = {
        f"{how} {signal}": {
            k: v
            for k, v in search_block(
                spec, table, grid, signal, args.budget, 0, n_all, workdir, how
            ).items()
            if k in ("hit_rate_all_seeds", "ratio_all_seeds")
        }
        for how in (VARIANTS if args.variants else ())
        for signal in SIGNALS
    }
    if args.check:
        result["replay_check"] = check_replay(spec, table, args.check, workdir)
    if args.train_search:
        started = time.perf_counter()
        budget = int(args.budget * grid["iterations"])
        real = one_search(spec, table, grid, "msa", 0, budget, workdir / "real", None)
        result["real_search"] = real | {"seconds": time.perf_counter() - started}
    _print(result)
    if args.save:
        from machine import save, summary

        result["machine"] = summary()
        print(f"saved {save('sweep_demo', result)}", file=sys.stderr)
    print(json.dumps(result, default=str))
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="2 x 2 grid")
    add("--workdir", type=Path, help="keep (and resume) the runs here")
    add("--iterations", type=int, default=150)
    add("--model", default="demo", help="tiny: a smoke test")
    add("--seeds", type=int, default=3)
    add("--search-seeds", type=int, default=3)
    add("--extra-search-seeds", type=int, default=20, help="for hit rates")
    add("--budget", type=float, default=0.5, help="of the grid's iterations")
    add("--budgets", type=_fractions, default=[0.2, 0.35, 0.5], help="hit-rate curve")
    add("--variants", action="store_true", help="other samplers and pruners too")
    add("--check", type=int, default=0, help="re-train N grid runs, compare")
    add("--train-search", action="store_true", help="one real (not replayed) search")
    add("--save", action="store_true", help="write results/sweep_demo_<machine>.json")
    return parser


def _fractions(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def _print(result: dict) -> None:
    grid = result["grid"]
    print(
        f"grid: best {grid['best_point']} {grid['best_mean']:.4f} ± "
        f"{grid['best_ci95']:.4f} (n={grid['n']}), {grid['iterations']} iterations; "
        f"{len(grid['indistinguishable'])} points indistinguishable ({grid['test']})",
        file=sys.stderr,
    )
    for key, value in result["rank_correlation"].items():
        print(
            f"  spearman {key}: runs {value['runs']:+.2f}, points {value['points']:+.2f}",
            file=sys.stderr,
        )
    for signal in SIGNALS:
        block = result[f"search_{signal}"]
        for s in block["searches"]:
            print(
                f"search {signal} seed {s['seed']}: {s['iterations']} iterations "
                f"({s['iterations'] / grid['iterations']:.0%}), picks {s['point']} "
                f"(grid mean {s['grid_mean']}), {'hit' if s['hit'] else 'miss'}",
                file=sys.stderr,
            )
        print(
            f"search {signal}: hit rate {block['hit_rate_all_seeds']:.2f} over "
            f"{block['search_seeds_all']} seeds at {block['ratio_all_seeds']:.0%} of the "
            f"grid; by budget {result[f'hit_rate_by_budget_{signal}']}",
            file=sys.stderr,
        )
    for key, value in result["variants"].items():
        print(
            f"variant {key}: hit rate {value['hit_rate_all_seeds']:.2f} at "
            f"{value['ratio_all_seeds']:.0%} of the grid",
            file=sys.stderr,
        )
    for s in result["one_seed_grid"]:
        print(
            f"one seed of the grid ({s['seed']}): {s['iterations']} iterations, picks "
            f"{s['point']} (grid mean {s['grid_mean']:.4f}), {'hit' if s['hit'] else 'miss'}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
