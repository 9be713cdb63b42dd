"""Issue 27, signals: two signals in a row are recorded as the first one (the
card or the trial, the sentence and the exit code agree), and SIGTERM while a
large grid is expanded exits 143 at once with nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from napari_peft_sam.cli import main
from napari_peft_sam.core.runfolder import read_card
from tests.helpers import sentence
from tests.sweep_helpers import SPEC, fake_runner
from tests.test_reliability import train

BOTH_ORDERS = pytest.mark.parametrize(
    "first, second",
    [(signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)],
    ids=["int-then-term", "term-then-int"],
)


def _deliver(signum: int) -> None:
    """Send ``signum`` to this process and let its Python handler run (a
    handler runs at the next backward jump of the interpreter loop)."""
    os.kill(os.getpid(), signum)
    for _ in range(10):
        pass


def _two_signals(first, second) -> None:
    _deliver(first)
    _deliver(second)  # a Ctrl-C after a first signal raises KeyboardInterrupt


@BOTH_ORDERS
def test_two_signals_to_a_training_record_the_first(
    tmp_path, capsys, monkeypatch, first, second
):
    from napari_peft_sam import _progress

    shown = _progress.ProgressPrinter.show

    def show(self, event):
        shown(self, event)
        if getattr(event, "kind", "") == "step" and event.step == 2:
            _two_signals(first, second)

    monkeypatch.setattr(_progress.ProgressPrinter, "show", show)
    code = train(tmp_path, "run", "--iterations", "50", "--checkpoint-interval", "1")
    name = signal.Signals(first).name
    err = capsys.readouterr().err
    assert code == 128 + first, err
    assert "Traceback" not in err and "Resume with" in err
    status = read_card(tmp_path / "run")["status"]
    if first == signal.SIGINT:  # the SIGTERM changed nothing: the step was saved
        assert status == "SIGINT" and "by SIGINT" in err
    else:  # Ctrl-C after SIGTERM stops at once, the record still names SIGTERM
        assert status == "SIGTERM, then interrupted" and "Interrupted" in err
    assert name in status
    assert (tmp_path / "run" / "state.pt").exists()  # the last checkpoint


def _spec(tmp_path, **changes) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}))
    return path


@BOTH_ORDERS
def test_two_signals_to_an_inline_sweep_record_the_first(
    tmp_path, capsys, monkeypatch, first, second
):
    from napari_peft_sam.core import worker
    from napari_peft_sam.core.store import open_storage, open_study
    from napari_peft_sam.core.sweep import SweepSpec

    points = []

    def runner(spec, point, run_dir, report=None, stop=None, on_event=None):
        record = fake_runner(spec, point, run_dir, report)
        points.append(point)
        if len(points) == 2:
            _two_signals(first, second)
        if stop.is_set():
            raise worker.Stopped("stopped at step 1")
        return record

    monkeypatch.setattr(worker, "run_point", runner)
    storage, runs = str(tmp_path / "s.journal"), tmp_path / "runs"
    args = ["sweep", "--config", str(_spec(tmp_path)), "--storage", storage]
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    code = main([*args, "--runs", str(runs)])
    err = capsys.readouterr().err.strip()
    assert code == 128 + first, err
    name = signal.Signals(first).name
    assert err == (
        f"error: the sweep was stopped by {name}; run the same command again to "
        "finish its points."
    )
    trials = open_study(open_storage(storage), "crash").trials
    assert len(points) == 2 and [t.state.name for t in trials[:2]] == [
        "COMPLETE",
        "FAIL",
    ]
    assert trials[1].user_attrs["values"] == points[1]
    assert trials[1].user_attrs["lost"]  # not a failure: queued again
    assert trials[1].user_attrs["error"].startswith("stopped")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (
        handlers
    )
    # the same command finishes the sweep: every point completes once
    monkeypatch.setattr(worker, "run_point", fake_runner)
    assert main([*args, "--runs", str(runs)]) == 0
    study = open_study(open_storage(storage), "crash")
    done = [t.user_attrs["point"] for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == len(set(done)) == len(SweepSpec.from_dict(SPEC).points())


SWEEP = """
import sys
from napari_peft_sam.core import worker
from napari_peft_sam.cli import main
from tests.sweep_helpers import fake_runner
worker.run_point = fake_runner
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_a_large_grid_is_queued_exits_143_at_once(tmp_path):
    import json

    from napari_peft_sam.core.store import open_storage, open_study
    from napari_peft_sam.core.sweep import MAX_POINTS

    grid = {"rank": list(range(1, 101)), "lr": [1e-4 * (i + 1) for i in range(99)]}
    path = _spec(tmp_path, grid=grid)
    size = 100 * 99
    assert MAX_POINTS - 100 <= size <= MAX_POINTS
    storage, runs = tmp_path / "s.journal", tmp_path / "runs"
    args = ["sweep", "--config", str(path), "--storage", str(storage)]
    proc = subprocess.Popen(
        [sys.executable, "-c", SWEEP, *args, "--runs", str(runs)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the points are being queued: the journal holds the first of them
        while proc.poll() is None and (
            not storage.exists() or storage.read_bytes().count(b"\n") < 50
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err.strip() == (
        "error: the sweep was stopped by SIGTERM; run the same command again to "
        "finish its points."
    )
    # stopped between two points: every journal line whole, no point ran
    data = storage.read_bytes()
    assert data.endswith(b"\n")
    assert all(json.loads(line) for line in data.splitlines())
    trials = open_study(open_storage(str(storage)), "crash").trials
    assert 0 < len(trials) < size and {t.state.name for t in trials} == {"WAITING"}
    assert not runs.exists() or not any(runs.iterdir())


def _handles_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has installed a SIGTERM handler (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(
        next(x for x in status.splitlines() if x.startswith("SigCgt:")).split()[1], 16
    )
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_sigterm_while_a_large_grid_is_expanded_exits_143(tmp_path):
    """Before anything is queued (the spec is read and its points checked)."""
    grid = {"rank": list(range(1, 101)), "lr": [1e-4 * (i + 1) for i in range(99)]}
    path = _spec(tmp_path, grid=grid)
    storage, runs = tmp_path / "s.journal", tmp_path / "runs"
    args = ["sweep", "--config", str(path), "--storage", str(storage)]
    proc = subprocess.Popen(
        [sys.executable, "-c", SWEEP, *args, "--runs", str(runs)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while proc.poll() is None and not _handles_sigterm(proc.pid):
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert sentence(err) == (
        "error: the sweep was stopped by SIGTERM; run the same command again to "
        "finish its points."
    )
    assert not storage.exists() and not runs.exists()  # nothing written at all
