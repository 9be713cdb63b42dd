"""Issue 27, a PostgreSQL results store that goes away: before the sweep or in
the middle of it. Exit 2, one sentence, no traceback; finished points keep
their run folders and their rows."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from napari_peft_sam.cli import main
from tests.helpers import one_sentence, sentence, snapshot
from tests.sweep_helpers import SPEC

ROOT = Path(__file__).resolve().parents[2]

# a sweep whose points take 2 s each and leave a card in their run folder
SWEEP = """
import json, sys, time
from pathlib import Path
from napari_peft_sam.core import worker
from napari_peft_sam.cli import main
from tests.sweep_helpers import fake_runner

def runner(spec, point, run_dir, report=None, stop=None, on_event=None):
    record = fake_runner(spec, point, run_dir, report)
    time.sleep(2.0)
    (Path(run_dir) / "card.json").write_text(json.dumps(point))
    return record

worker.run_point = runner
sys.exit(main(sys.argv[1:]))
"""


def _spec(tmp_path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def _started(log: Path, proc, points: int) -> None:
    """Wait until ``points`` points have started (the log has that many lines)."""
    while proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= points:
            return
        time.sleep(0.1)
    raise AssertionError(proc.communicate()[1])


def test_a_database_stopped_mid_sweep_is_one_sentence(tmp_path, postgres_server):
    runs = tmp_path / "runs"
    args = ["sweep", "--config", str(_spec(tmp_path)), "--storage", postgres_server.url]
    proc = subprocess.Popen(
        [sys.executable, "-c", SWEEP, *args, "--runs", str(runs)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _started(runs / "calls.log", proc, 3)  # two points finished, one runs
        finished = sorted(
            p for p in runs.glob("crash-t*") if (p / "card.json").exists()
        )
        before = snapshot(*finished)
        postgres_server.stop()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    assert proc.returncode == 2, err
    assert sentence(err).startswith("error: The results database postgresql://")
    assert "stopped answering" in err and "rerun the sweep to resume" in err
    assert ":unused@" not in err
    assert len(finished) == 2 and snapshot(*finished) == before
    # once the database is back, the same command finishes the sweep
    postgres_server.start()
    code = subprocess.run(
        [sys.executable, "-c", SWEEP, *args, "--runs", str(runs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert code.returncode == 0, code.stderr
    assert snapshot(*finished) == before


def test_a_database_down_at_the_start_is_one_sentence(
    tmp_path, postgres_server, capsys
):
    postgres_server.stop()
    path = _spec(tmp_path)
    before = snapshot(tmp_path)
    args = ["sweep", "--config", str(path), "--storage", postgres_server.url]
    assert main([*args, "--runs", str(tmp_path / "runs")]) == 2
    assert one_sentence(capsys).startswith("error: Cannot open the database")
    assert snapshot(tmp_path) == before


def _away() -> Exception:
    """What Optuna raises when the database went away during a commit."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import OperationalError

    try:
        try:
            raise OperationalError("commit", {}, ConnectionRefusedError())
        except OperationalError as cause:
            raise StorageInternalError(
                "An exception is raised during the commit."
            ) from cause
    except StorageInternalError as error:
        return error


def test_database_errors_are_told_from_a_failing_point():
    from submitit.core.utils import FailedJobError

    from napari_peft_sam.core.errors import UserError
    from napari_peft_sam.core.store import database_error

    assert database_error(_away())
    trace = "Traceback ...\noptuna.exceptions.StorageInternalError: An exception"
    assert database_error(FailedJobError(f"Job (task=0) failed with trace:\n{trace}"))
    assert not database_error(FailedJobError("Job failed:\nValueError: rank 0"))
    assert not database_error(RuntimeError("rank 4 always fails"))
    try:
        try:
            raise _away()
        except Exception:
            raise UserError("a sentence") from None
    except UserError as error:
        assert not database_error(error)  # a sentence that replaced it


def test_a_heartbeat_into_a_stopped_database_is_silent(monkeypatch):
    import threading

    from napari_peft_sam.core.worker import Heartbeat

    beats, crashed = threading.Semaphore(0), []
    monkeypatch.setattr(threading, "excepthook", crashed.append)

    class Trial:
        def set_user_attr(self, key, value):
            beats.release()
            raise _away()

    with Heartbeat(Trial(), interval=0.01):
        for _ in range(3):  # it keeps beating after a failed beat
            assert beats.acquire(timeout=60)
    assert crashed == []


def test_a_database_stopped_under_local_workers_is_one_sentence(
    tmp_path, postgres_server
):
    """Workers in their own processes (``--executor local``): their failure
    comes back through submitit, and is the same one sentence."""
    spec = {
        "name": "local",
        "dataset": "organoids",
        "model": "tiny",
        "method": "lora",
        "grid": {"rank": [1, 2, 4, 8]},
        "fixed": {"iterations": 2, "n_objects": 2, "n_sub_iterations": 1},
        "metrics": ["single box"],
        "eval_images": 1,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    runs = tmp_path / "runs"
    args = ["sweep", "--config", str(tmp_path / "spec.yaml")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_peft_sam.cli", *args, "--storage",
         postgres_server.url, "--runs", str(runs), "--executor", "local"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = runs / "local-t0000" / "card.json"
        while proc.poll() is None and not (
            first.exists() and '"evaluations"' in first.read_text()
        ):
            time.sleep(0.2)
        before = snapshot(first.parent)
        postgres_server.stop()
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    assert sentence(err).startswith("error: The results database postgresql://")
    assert snapshot(first.parent) == before
