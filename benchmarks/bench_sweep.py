"""Sweep efficiency: the full grid against the search mode, and the store's overhead.

On the demo setting (demo model, organoids, LoRA), a 4 x 4 rank x alpha grid
is run completely, then the search mode (TPE + successive halving on the
validation loss) gets a budget of a third of the grid's trials. Printed: the
grid's best single-box mSA, the search's best, and the training iterations
each used. Then the per-trial overhead of the journal store with 100 trials.

    python benchmarks/bench_sweep.py [--quick]

The last line is one JSON object with grid_best, search_best, grid_iterations,
search_iterations and store_overhead_ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from napari_peft_sam.core import results
from napari_peft_sam.core.presets import PRESETS
from napari_peft_sam.core.sweep import SweepSpec
from napari_peft_sam.core.worker import run_search, run_worker


def spec_for(quick: bool) -> SweepSpec:
    values = dict(PRESETS["demo"])
    values["name"] = "bench"
    values["grid"] = (
        {"rank": [1, 4], "alpha": [1, 4]}
        if quick
        else {"rank": [1, 2, 4, 8], "alpha": [0.5, 1, 2, 4]}
    )
    values["metrics"] = ["single box"]
    return SweepSpec.from_dict(values)


def _noop_runner(spec, point, run_dir, report=None):
    return {
        "metrics": {"single box": 0.5},
        "trainable_parameters": 1000,
        "train_time_s": 0.0,
        "peak_memory_mb": None,
        "iterations": 1,
    }


def store_overhead_ms(folder: Path, n: int = 100) -> float:
    """Per-trial cost of the store in a real worker loop (reconcile, claim, row, tell).

    A 100-point grid with a runner that does no work: everything measured is
    the journal store's bookkeeping, with up to 100 trials in the study.
    """
    spec = SweepSpec.from_dict(
        {**PRESETS["demo"], "name": "overhead", "grid": {"rank": list(range(1, n + 1))}}
    )
    start = time.perf_counter()
    run_worker(
        str(folder / "overhead.journal"), spec, folder / "noop", runner=_noop_runner
    )
    return (time.perf_counter() - start) / n * 1000


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    spec = spec_for(args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        storage = str(tmp / "bench.journal")
        start = time.perf_counter()
        run_worker(storage, spec, tmp / "grid")
        grid_s = time.perf_counter() - start
        grid = [
            r for r in results.rows(storage, ["bench"]) if r["status"] == "complete"
        ]
        grid_best = max(r["metrics"]["single box"] for r in grid)
        best_point = max(grid, key=lambda r: r["metrics"]["single box"])["params"]
        grid_iterations = sum(r["iterations"] for r in grid)
        n_trials = max(2, len(spec.points()) // 3)
        start = time.perf_counter()
        study = run_search(storage, spec, n_trials, tmp / "search")
        search_s = time.perf_counter() - start
        finished = [t for t in study.trials if t.user_attrs.get("metrics")]
        search_best = max(
            (t.user_attrs["metrics"]["single box"] for t in finished), default=0.0
        )
        search_iterations = sum(
            t.user_attrs.get("iterations") or 0 for t in study.trials
        )
        overhead = store_overhead_ms(tmp)
    result = {
        "grid_points": len(spec.points()),
        "grid_best": grid_best,
        "grid_best_point": best_point,
        "grid_iterations": grid_iterations,
        "grid_s": grid_s,
        "search_trials": n_trials,
        "search_best": search_best,
        "search_iterations": search_iterations,
        "search_s": search_s,
        "search_within_0.01": search_best >= grid_best - 0.01,
        "iteration_ratio": search_iterations / grid_iterations,
        "store_overhead_ms": overhead,
    }
    for key, value in result.items():
        print(f"{key:>20}: {value}", file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
