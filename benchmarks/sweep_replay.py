"""The searches of ``bench_sweep.py``, replayed on the grid's recorded runs.

A search trial of point p with training seed k gets exactly the curve and the
metric the grid's run (p, k) produced: training is deterministic given the
seed (``bench_sweep.py --check N`` re-trains grid runs and compares).
"""

from __future__ import annotations

from napari_peft_sam.core import catalog
from napari_peft_sam.core.records import RunRecord, point_key
from napari_peft_sam.core.search import (
    best_point,
    iterations_used,
    run_search,
    rung_interval,
)

METRIC = catalog.PRIMARY


def replay_runner(table: list[dict], signal: str):
    """A runner that gives a search trial the grid's run of the same point and seed."""
    by_key = {point_key(r["params"]): r for r in table}

    def run(spec, point, run_dir, report=None, stop=None, on_event=None):
        row = by_key[point_key(point)]
        for step, value in sorted(row["signals"][signal].items()):
            if report is not None:
                report(value, step)
        return RunRecord(
            run_dir=row["run_dir"],
            dataset=row["dataset"],
            model=row["model"],
            method=row["method"],
            params=dict(point),
            settings=row["settings"],
            metrics=row["metrics"],
            iterations=row["iterations"],
        )

    return run


def variant(name: str, seed: int, spec, signal: str) -> dict:
    """Sampler and pruner of a search variant ("tpe+sha2", "random+none", ...)."""
    import optuna

    sampler_name, pruner_name = name.split("+")
    rung = rung_interval(spec, signal)
    samplers = {
        "tpe": None,  # run_search's default
        "random": optuna.samplers.RandomSampler(seed=seed),
    }
    pruners = {
        "sha2": None,  # run_search's default
        "sha3": optuna.pruners.SuccessiveHalvingPruner(rung, reduction_factor=3),
        "median": optuna.pruners.MedianPruner(n_startup_trials=4, interval_steps=rung),
        "none": optuna.pruners.NopPruner(),
    }
    return {"sampler": samplers[sampler_name], "pruner": pruners[pruner_name]}


VARIANTS = (
    "tpe+sha2",
    "tpe+sha3",
    "tpe+median",
    "tpe+none",
    "random+sha2",
    "random+none",
)


def one_search(
    spec, table, grid, signal, seed, budget, workdir, runner=None, how="tpe+sha2"
):
    """One search (replayed unless ``runner`` is None and ``workdir`` is fresh)."""
    tag = f"{how}-{signal}-{budget}"
    study = run_search(
        str(workdir / f"search-{tag}.journal"),
        spec,
        n_trials=10**6,
        runs_root=workdir / "search",
        runner=runner or replay_runner(table, signal),
        seed=seed,
        signal=signal,
        max_iterations=budget,
        name=f"bench-search-{tag}-s{seed}",
        **variant(how, seed, spec, signal),
    )
    point, value, visits = best_point(study)
    mean = grid["means"].get(point_key(point)) if point else None
    trained = [t for t in study.trials if not t.user_attrs.get("duplicate")]
    return {
        "seed": seed,
        "iterations": iterations_used(study),
        "trained_trials": len(trained),
        "pruned": sum(t.state.name == "PRUNED" for t in trained),
        "point": point,
        "search_value": value,
        "visits": visits,
        "grid_mean": mean,
        "hit": _hit(mean, grid),
    }


def search_block(
    spec, table, grid, signal, fraction, seeds, extra, workdir, how="tpe+sha2"
) -> dict:
    """``seeds`` searches shown one by one, plus ``extra`` more for a hit rate."""
    budget = int(fraction * grid["iterations"])
    runs = [
        one_search(spec, table, grid, signal, s, budget, workdir, how=how)
        for s in range(seeds + extra)
    ]
    shown = runs[:seeds]
    return {
        "budget": fraction,
        "searches": shown,
        "mean_iteration_ratio": _mean(s["iterations"] for s in shown)
        / grid["iterations"],
        "hits": sum(s["hit"] for s in shown),
        "hit_rate_all_seeds": _mean(s["hit"] for s in runs),
        "ratio_all_seeds": _mean(s["iterations"] for s in runs) / grid["iterations"],
        "search_seeds_all": len(runs),
    }


def _hit(mean, grid) -> bool:
    return mean is not None and mean >= grid["best_mean"] - grid["best_ci95"]


def one_seed_grid(table, grid) -> list[dict]:
    """The baseline: each single seed of the grid, its best point and whether it hits."""
    out = []
    for seed in sorted({r["params"]["seed"] for r in table}):
        runs = [r for r in table if r["params"]["seed"] == seed]
        best = max(runs, key=lambda r: r["metrics"][METRIC])
        point = {k: v for k, v in best["params"].items() if k != "seed"}
        mean = grid["means"][point_key(point)]
        out.append(
            {
                "seed": seed,
                "iterations": sum(r["iterations"] for r in runs),
                "point": point,
                "grid_mean": mean,
                "hit": _hit(mean, grid),
            }
        )
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
