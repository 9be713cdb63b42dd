"""Repeated training seeds: every (point, seed) runs once, even across a kill,
and the report shows per point the mean, the 95 % interval and n."""

import csv
import io
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from napari_peft_sam.cli import main
from napari_peft_sam.core import catalog, results
from napari_peft_sam.core.records import point_key
from napari_peft_sam.core.store import open_storage, open_study
from napari_peft_sam.core.sweep import SweepSpec
from napari_peft_sam.core.worker import run_worker
from tests.sweep_helpers import fake_runner

ROOT = Path(__file__).resolve().parents[2]
BOX = catalog.SINGLE_BOX.name
SEEDED = {
    "name": "seeded",
    "dataset": "organoids",
    "model": "tiny",
    "method": "lora",
    "grid": {"rank": [1, 4], "alpha": [1]},
    "fixed": {"iterations": 2},
    "metrics": [BOX],
    "seeds": 2,
}
WORKER = """
import sys
from functools import partial
from napari_peft_sam.core.sweep import SweepSpec
from napari_peft_sam.core.worker import run_worker
from tests.core.test_seeds import SEEDED
from tests.sweep_helpers import fake_runner
run_worker(sys.argv[1], SweepSpec.from_dict(SEEDED), sys.argv[2],
           runner=partial(fake_runner, sleep=1.0))
"""


def completed(storage):
    from optuna.trial import TrialState as S

    study = open_study(open_storage(storage), "seeded")
    return Counter(
        t.user_attrs["point"] for t in study.get_trials() if t.state == S.COMPLETE
    )


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_seeds_expand_every_point():
    points = SweepSpec.from_dict(SEEDED).points()
    assert [(p["rank"], p["seed"]) for p in points] == [(1, 0), (1, 1), (4, 0), (4, 1)]
    config = SweepSpec.from_dict(SEEDED).run_config(points[1])
    assert config.train.seed == 1 and config.data.split_seed == 0  # same split


def test_killed_seeded_sweep_resumes_each_point_and_seed_once(tmp_path, capsys):
    storage, runs = str(tmp_path / "s.journal"), tmp_path / "runs"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, storage, str(runs)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    log = runs / "calls.log"
    while time.monotonic() < deadline:  # kill it during its second (point, seed)
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert 0 < sum(completed(storage).values()) < 4
    run_worker(storage, SweepSpec.from_dict(SEEDED), runs, runner=fake_runner)
    done = completed(storage)
    wanted = {point_key(p) for p in SweepSpec.from_dict(SEEDED).points()}
    assert set(done) == wanted and set(done.values()) == {1}
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(calls) == 5  # four (point, seed) runs plus the one the kill cut short

    assert main(["report", "--storage", storage]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert cells(lines[0]) == ["alpha", "rank", "n", BOX]
    body = {cells(line)[1]: cells(line) for line in lines[2:4]}
    # fake scores: 0.1 rank + 0.01 alpha + 0.001 seed -> mean +0.0005, sd 0.000707
    assert body["1"][2] == "2" and body["1"][3] == "0.111 ± 0.006"
    assert body["4"][3] == "**0.411 ± 0.006**"  # the best; rank 1 differs on both seeds
    assert "95 % confidence interval" in lines[5] and "paired t-test" in lines[5]

    table = list(csv.DictReader(io.StringIO(results.to_csv(results.rows(storage)))))
    assert len(table) == 4 and {r["n"] for r in table} == {"2"}
    rank4 = [r for r in table if r["rank"] == "4"]
    assert float(rank4[0][f"{BOX} mean"]) == pytest.approx(0.4105)
    assert abs(float(rank4[0][f"{BOX} ci95"]) - 0.00635) < 1e-4


def test_seeds_change_the_training_on_tiny(tmp_path):
    """Real training: two seeds of one point give two runs, seeds 0 and 1."""
    spec = SweepSpec.from_dict({**SEEDED, "grid": {"rank": [2]}, "eval_images": 1})
    storage = str(tmp_path / "s.journal")
    run_worker(storage, spec, tmp_path / "runs")
    rows = results.rows(storage)
    assert sorted(r["settings"]["seed"] for r in rows) == [0, 1]
    assert all(r["status"] == "complete" and r["iterations"] == 2 for r in rows)
    losses = [
        [
            json.loads(x)["loss"]
            for x in (Path(r["run_dir"]) / "events.jsonl").read_text().splitlines()
            if json.loads(x).get("kind") == "step"
        ]
        for r in rows
    ]
    assert losses[0] != losses[1]  # another seed, another data order
    header = cells(results.markdown(rows).splitlines()[0])
    assert header == ["rank", "n", BOX]
