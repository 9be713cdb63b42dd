"""Sweeps: presets, crash safety, parallel workers, grown grids, failures, reports."""

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from napari_peft_sam.cli import main
from napari_peft_sam.core import results
from napari_peft_sam.core.errors import ConfigError
from napari_peft_sam.core.presets import PRESETS, preset
from napari_peft_sam.core.store import open_storage, open_study
from napari_peft_sam.core.sweep import SweepSpec
from napari_peft_sam.core.worker import run_worker
from tests.sweep_helpers import SPEC, fake_runner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["journal", "postgresql"])
def storage(request, tmp_path):
    """Each crash-safety case runs on a journal file and on a real PostgreSQL server."""
    if request.param == "journal":
        return str(tmp_path / "s.journal")
    return request.getfixturevalue("postgres_url")


def completed(storage, name="crash"):
    from optuna.trial import TrialState as S

    study = open_study(open_storage(storage), name)
    return Counter(
        t.user_attrs["point"] for t in study.get_trials() if t.state == S.COMPLETE
    )


def spawn_worker(storage, runs, sleep):
    code = "import sys; from tests.sweep_helpers import main; main(*sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(storage), str(runs), str(sleep)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_presets_reproduce_the_study_grids():
    sizes = {name: len(preset(name).points()) for name in PRESETS}
    assert sizes == {
        "lora_rank_alpha": 21,
        "lora_lr_alpha_rank": 30,
        "lora_alpha": 7,
        "lora_alpha_datasets": 24,
        "adaptformer": 48,
        "fact_dropout": 4,
        "fact_rank": 6,
        "demo": 4,
    }
    config = preset("lora_alpha_datasets").run_config(
        {"dataset": "platy_cilia", "model": "vit_b_em_organelles", "alpha": 8}
    )
    assert config.method.rank == 32 and config.method.alpha == 8
    assert config.train.lr == 1e-5 and config.model.name == "vit_b_em_organelles"


def test_invalid_grid_values_are_refused_before_anything_runs():
    with pytest.raises(ConfigError, match="rank must be an integer >= 1"):
        SweepSpec.from_dict({**SPEC, "grid": {"rank": [4, 0]}})
    with pytest.raises(ConfigError, match="lr must be a number > 0"):
        SweepSpec.from_dict({**SPEC, "grid": {"lr": [1e-4, 3.0]}})


def test_inline_sweep_completes_every_point_once(tmp_path, storage):
    spec = SweepSpec.from_dict(SPEC)
    run_worker(str(storage), spec, tmp_path / "runs", runner=fake_runner)
    assert sorted(completed(storage).values()) == [1] * 6
    run_worker(
        str(storage), spec, tmp_path / "runs", runner=fake_runner
    )  # nothing left
    assert len((tmp_path / "runs" / "calls.log").read_text().splitlines()) == 6


def test_killed_worker_then_resume_completes_each_point_exactly_once(tmp_path, storage):
    runs = tmp_path / "runs"
    worker = spawn_worker(storage, runs, sleep=1.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it in the middle of its third point
        log = runs / "calls.log"
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    before = completed(storage)
    assert 0 < sum(before.values()) < 6
    run_worker(str(storage), SweepSpec.from_dict(SPEC), runs, runner=fake_runner)
    after = completed(storage)
    assert len(after) == 6 and set(after.values()) == {1}
    calls = [
        json.dumps(json.loads(x), sort_keys=True)
        for x in (runs / "calls.log").read_text().splitlines()
    ]
    assert len(calls) == 7  # the six points, plus the one the kill interrupted
    rows = results.rows(str(storage))
    assert [r["status"] for r in rows] == ["complete"] * 6


def test_parallel_workers_never_run_a_point_twice(tmp_path, storage):
    workers = [spawn_worker(storage, tmp_path / "runs", sleep=0.3) for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read().decode()[-2000:]
    done = completed(storage)
    assert len(done) == 6 and set(done.values()) == {1}
    assert len((tmp_path / "runs" / "calls.log").read_text().splitlines()) == 6


def test_a_grown_grid_runs_only_the_new_points(tmp_path, storage):
    runs = tmp_path / "runs"
    run_worker(storage, SweepSpec.from_dict(SPEC), runs, runner=fake_runner)
    grown = SweepSpec.from_dict(
        {**SPEC, "grid": {"rank": [1, 2, 4, 8], "alpha": [1, 4]}}
    )
    run_worker(storage, grown, runs, runner=fake_runner)
    calls = (runs / "calls.log").read_text().splitlines()
    assert len(calls) == 8 and all('"rank": 8' in c for c in calls[6:])
    assert len(completed(storage)) == 8


def test_a_failing_point_is_retried_then_shown_failed(tmp_path, storage):
    runs = tmp_path / "runs"
    runner = partial(fake_runner, fail_rank=2)
    run_worker(storage, SweepSpec.from_dict(SPEC), runs, runner=runner)
    calls = Counter(
        json.loads(x)["rank"] for x in (runs / "calls.log").read_text().splitlines()
    )
    assert calls[2] == 2 * 2  # two points with rank 2, each tried 1 + max_retries times
    table = results.rows(storage)
    failed = [r for r in table if r["status"] == "fail"]
    assert len(failed) == 2 and all("rank 2 always fails" in r["error"] for r in failed)
    text = results.markdown(table)
    assert (
        "failed:" in text and text.count("\n|") == 1 + 4
    )  # separator + 4 complete rows


def test_report_in_the_seed_format_csv_and_heatmap(tmp_path, capsys):
    storage = str(tmp_path / "s.journal")
    run_worker(
        storage, SweepSpec.from_dict(SPEC), tmp_path / "runs", runner=fake_runner
    )
    assert (
        main(
            [
                "report",
                "--storage",
                storage,
                "--heatmap",
                "single box",
                "rank",
                "alpha",
                "--out",
                str(tmp_path / "h.png"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "alpha",
        "rank",
        "single box",
    ]
    assert [c.strip() for c in lines[2].strip("|").split("|")] == ["1", "1", "0.11"]
    assert (tmp_path / "h.png").stat().st_size > 1000
    assert main(["report", "--storage", storage, "--format", "csv"]) == 0
    csv_text = capsys.readouterr().out
    assert csv_text.startswith("study,trial,status,dataset,model,method,alpha,rank,ais")


def test_passwords_never_reach_the_table():
    from napari_peft_sam.core.store import redact

    assert redact("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
