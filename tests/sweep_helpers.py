"""A stand-in for training in sweep tests: fast, deterministic, countable."""

import json
import sys
import time
from pathlib import Path

from napari_peft_sam.core.records import RunRecord
from napari_peft_sam.core.sweep import SweepSpec
from napari_peft_sam.core.worker import run_worker

SPEC = {
    "name": "crash",
    "dataset": "organoids",
    "model": "tiny",
    "method": "lora",
    "grid": {"rank": [1, 2, 4], "alpha": [1, 4]},
    "fixed": {"iterations": 2},
    "metrics": ["single box"],
    "max_retries": 1,
}


def fake_runner(
    spec,
    point,
    run_dir,
    report=None,
    sleep=0.0,
    fail_rank=None,
    stop=None,
    on_event=None,
):
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(run_dir).parent / "calls.log", "a") as log:
        log.write(json.dumps(point) + "\n")
    time.sleep(sleep)
    if point.get("rank") == fail_rank:
        raise RuntimeError(f"rank {fail_rank} always fails")
    score = 0.1 * point["rank"] + 0.01 * point["alpha"] + 0.001 * point.get("seed", 0)
    return RunRecord(
        run_dir=str(run_dir),
        dataset=spec.dataset,
        model=spec.model,
        method=spec.method,
        params=dict(point),
        metrics={"single box": score},
        trainable_parameters=10 * point["rank"],
        train_time_s=sleep,
        iterations=2,
    )


def main(storage, runs, sleep, grace="600"):
    from functools import partial

    spec = SweepSpec.from_dict(SPEC)
    run_worker(
        storage, spec, runs, float(grace), partial(fake_runner, sleep=float(sleep))
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
