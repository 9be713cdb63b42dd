"""Issue 27, sweeps: each case feeds the input and checks the exit code, the
sentence and that no user file changed."""

import os
import socket
import time
from types import SimpleNamespace

import pytest
import yaml

from napari_peft_sam.cli import main
from napari_peft_sam.core.records import point_key
from napari_peft_sam.core.store import open_storage, open_study
from napari_peft_sam.core.sweep import MAX_POINTS, SweepSpec, fingerprint
from napari_peft_sam.core.worker import _owner_alive, process_start, run_worker
from tests.helpers import one_sentence, sentence, snapshot
from tests.sweep_helpers import SPEC, fake_runner


def write_spec(tmp_path, **changes):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}))
    return path


def refused(args, capsys, *words):
    """Run the CLI; assert exit 2 and one sentence holding ``words``."""
    assert main(args) == 2
    err = one_sentence(capsys)
    for word in words:
        assert word in err, err
    return err


def test_fingerprint_ignores_execution_only_fields_only():
    spec = SweepSpec.from_dict(SPEC)
    grown = SweepSpec.from_dict({**SPEC, "grid": {"rank": [1, 2, 4, 8]}, "seeds": 2})
    assert fingerprint(spec) == fingerprint(grown)
    for change in (
        {"dataset": "platy_cilia"},
        {"fixed": {"iterations": 3}},
        {"metrics": ["single box", "single point"]},
    ):
        assert fingerprint(SweepSpec.from_dict({**SPEC, **change})) != fingerprint(spec)


def test_a_reused_sweep_name_with_another_spec_is_refused(
    tmp_path, capsys, monkeypatch
):
    storage = str(tmp_path / "s.journal")
    run_worker(
        storage, SweepSpec.from_dict(SPEC), tmp_path / "runs", runner=fake_runner
    )
    other = write_spec(tmp_path, fixed={"iterations": 3})
    before = snapshot(tmp_path)
    args = ["sweep", "--config", str(other), "--storage", storage]
    refused(args, capsys, "'crash'", "another spec", "sweep --name")
    assert snapshot(tmp_path) == before
    # --name picks another study in the same store; the first one is untouched
    monkeypatch.setattr("napari_peft_sam.core.worker.run_point", fake_runner)
    assert main([*args, "--name", "crash2", "--runs", str(tmp_path / "runs")]) == 0
    studies = open_storage(storage).get_all_studies()
    assert sorted(s.study_name for s in studies) == ["crash", "crash2"]


def test_primary_metric_outside_the_metrics_is_refused_up_front(tmp_path, capsys):
    path = write_spec(tmp_path, primary="single point")
    before = snapshot(tmp_path)
    storage = str(tmp_path / "s.journal")
    refused(
        ["sweep", "--config", str(path), "--storage", storage],
        capsys,
        "primary metric 'single point' is not among its metrics",
    )
    assert snapshot(tmp_path) == before


def test_a_grid_over_the_limit_is_refused_before_anything_is_written(tmp_path, capsys):
    big = {"rank": list(range(1, 1001)), "alpha": list(range(1, 1001))}
    path = write_spec(tmp_path, grid=big)
    before = snapshot(tmp_path)
    refused(
        ["sweep", "--config", str(path), "--storage", str(tmp_path / "s.journal")],
        capsys,
        "1,000,000 points",
        f"limit of {MAX_POINTS:,}",
    )
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"fixed": "garbage"}, "'fixed' must be a mapping"),
        ({"max_retries": "x"}, "'max_retries' must be a whole number"),
        ({"grid": ["rank"]}, "grid must be a mapping"),
        ({"metrics": "single box"}, None),  # a string names metrics, not letters
    ],
)
def test_spec_fields_of_the_wrong_type_are_sentences(tmp_path, capsys, changes, words):
    path = write_spec(tmp_path, **changes)
    before = snapshot(tmp_path)
    args = ["sweep", "--config", str(path), "--storage", str(tmp_path / "s.journal")]
    if words is None:
        assert SweepSpec.load(path).metrics == ["single box"]
        return
    refused([*args, "--status"], capsys, words)
    assert snapshot(tmp_path) == before


def test_a_set_value_that_is_not_yaml_is_a_sentence(tmp_path, capsys):
    path = write_spec(tmp_path)
    before = snapshot(tmp_path)
    refused(
        [
            "sweep",
            "--config",
            str(path),
            "--storage",
            str(tmp_path / "s.journal"),
            "--set",
            "iterations=[1",
        ],
        capsys,
        "--set iterations=[1 is not a valid value",
    )
    assert snapshot(tmp_path) == before


def _running(**attrs):
    base = {"host": socket.gethostname(), "heartbeat": time.time()}
    return SimpleNamespace(
        user_attrs=base | attrs,
        datetime_start=SimpleNamespace(timestamp=lambda: time.time()),
    )


def test_liveness_is_a_lease_not_a_pid(tmp_path):
    me = os.getpid()
    assert _owner_alive(_running(pid=me, pid_start=process_start(me)), 600)
    # pid 1 always exists: a worker that was pid 1 in its namespace and died
    # must lose the point once its lease (heartbeat) expires
    stale = time.time() - 700
    assert not _owner_alive(_running(pid=1, heartbeat=stale), 600)
    # a reused pid (same number, another start time) frees the point at once
    assert not _owner_alive(_running(pid=me, pid_start="1"), 600)


def test_a_point_of_a_worker_lost_in_a_pid_namespace_is_requeued(tmp_path):
    storage = str(tmp_path / "s.journal")
    spec = SweepSpec.from_dict(SPEC)
    study = open_study(open_storage(storage, write=True), spec.name, create=True)
    trial = study.ask()
    trial.set_user_attr("point", point_key({"alpha": 1, "rank": 1}))
    trial.set_user_attr("values", {"alpha": 1, "rank": 1})
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", 1)
    trial.set_user_attr("heartbeat", time.time() - 700)
    run_worker(storage, spec, tmp_path / "runs", grace_s=600, runner=fake_runner)
    study = open_study(open_storage(storage), spec.name)
    lost = study.trials[trial.number]
    assert lost.user_attrs.get("lost") is True
    done = {t.user_attrs["point"] for t in study.trials if t.state.name == "COMPLETE"}
    assert len(done) == len(spec.points())


def test_a_grown_grid_whose_new_points_all_fail_exits_non_zero(
    tmp_path, capsys, monkeypatch
):
    from functools import partial

    storage, runs = str(tmp_path / "s.journal"), str(tmp_path / "runs")
    run_worker(storage, SweepSpec.from_dict(SPEC), runs, runner=fake_runner)
    monkeypatch.setattr(
        "napari_peft_sam.core.worker.run_point", partial(fake_runner, fail_rank=8)
    )
    grown = write_spec(tmp_path, grid={"rank": [1, 2, 4, 8], "alpha": [1, 4]})
    args = ["sweep", "--config", str(grown), "--storage", storage, "--runs", runs]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "2 of 8 points of the sweep failed" in err and "rank 8 always fails" in err


def test_the_csv_names_a_grid_dataset_once(tmp_path, capsys):
    from napari_peft_sam.core.results import to_csv
    from napari_peft_sam.core.store import rows

    storage = str(tmp_path / "s.journal")
    spec = SweepSpec.from_dict(
        {**SPEC, "grid": {"dataset": ["organoids"], "rank": [1], "alpha": [1]}}
    )
    run_worker(storage, spec, tmp_path / "runs", runner=fake_runner)
    header = to_csv(rows(storage)).splitlines()[0].split(",")
    assert header.count("dataset") == 1


def test_a_missing_primary_with_search_is_refused_up_front(tmp_path, capsys):
    path = write_spec(tmp_path, primary="ais")
    storage = str(tmp_path / "s.journal")
    refused(
        ["sweep", "--config", str(path), "--storage", storage, "--search", "3"],
        capsys,
        "primary metric 'ais' is not among its metrics",
    )
    assert not (tmp_path / "s.journal").exists()


SLOW_SWEEP = """
import sys
from functools import partial
from napari_peft_sam.core import worker
from napari_peft_sam.cli import main
from tests.sweep_helpers import fake_runner
worker.run_point = partial(fake_runner, sleep=1.0)
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_to_an_inline_sweep_exits_143_and_requeues_the_point(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    storage, runs = str(tmp_path / "s.journal"), tmp_path / "runs"
    path = write_spec(tmp_path)
    args = ["sweep", "--config", str(path), "--storage", storage, "--runs", str(runs)]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SWEEP, *args],
        cwd=root,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = runs / "calls.log"
    while not log.exists() and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in sentence(err)
    # the stopped point runs again on resume; every point completes once
    run_worker(storage, SweepSpec.from_dict(SPEC), runs, runner=fake_runner)
    study = open_study(open_storage(storage), "crash")
    done = [t.user_attrs["point"] for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(set(done)) == sorted(done) and len(done) == 6


def test_local_jobs_are_found_again_by_pid_and_start_time(tmp_path):
    import subprocess
    import sys

    from napari_peft_sam.core.executors import LocalHandle

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        job = {"id": str(proc.pid), "pid_start": process_start(proc.pid)}
        other = LocalHandle({**job, "pid_start": "1"})  # the pid, reused
        assert other.state == "FINISHED"
        other.cancel()
        assert proc.poll() is None
        handle = LocalHandle(job)
        assert handle.state == "RUNNING"
        handle.cancel()
        assert proc.wait(timeout=60) == -15
        assert handle.state == "FINISHED"
    finally:
        proc.kill()
        proc.wait()


def test_a_silent_client_does_not_block_the_model_service(tmp_path):
    import socket as sockets
    import threading
    from multiprocessing.connection import Client, Listener

    from napari_peft_sam.core.service import accept

    key = b"k" * 32
    listener = Listener(authkey=key)
    silent = sockets.socket(sockets.AF_UNIX)
    silent.connect(listener.address)  # connects and never says a word
    replies = []

    def service():
        conn = Client(listener.address, authkey=key)
        conn.send("hello")
        replies.append(conn.recv())
        conn.close()

    thread = threading.Thread(target=service, daemon=True)
    thread.start()
    try:
        conn = accept(listener, lambda: False, tries=30, handshake_s=0.5)
        assert conn is not None and conn.recv() == "hello"
        conn.send("ok")
        thread.join(30)
        assert replies == ["ok"]
    finally:
        silent.close()
        listener.close()


def _damaged_journal(tmp_path, change):
    import json

    storage = tmp_path / "s.journal"
    run_worker(
        str(storage), SweepSpec.from_dict(SPEC), tmp_path / "runs", runner=fake_runner
    )
    lines = storage.read_text().splitlines()
    storage.write_text("\n".join(change(lines, json)) + "\n")
    return storage


def _unknown_op(lines, json):
    return [*lines, json.dumps({"op_code": 99, "worker_id": "x"})]


def _wrong_metrics(lines, json):
    out = []
    for line in lines:
        record = json.loads(line)
        if "metrics" in record.get("user_attr", {}):
            record["user_attr"]["metrics"] = "garbage"
        out.append(json.dumps(record))
    return out


@pytest.mark.parametrize(
    "change, words",
    [
        (_unknown_op, "is not a readable results store"),
        (_wrong_metrics, "has metrics of the wrong type (str)"),
    ],
)
def test_corrupt_journals_are_sentences(tmp_path, capsys, change, words):
    storage = _damaged_journal(tmp_path, change)
    before = snapshot(tmp_path)
    refused(["report", "--storage", str(storage)], capsys, words)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS"])
def test_a_full_or_read_only_store_is_a_sentence(tmp_path, capsys, monkeypatch, code):
    import errno

    from optuna.storages.journal import JournalFileBackend

    storage = tmp_path / "s.journal"
    run_worker(
        str(storage), SweepSpec.from_dict(SPEC), tmp_path / "runs", runner=fake_runner
    )
    grown = write_spec(tmp_path, grid={"rank": [1, 2, 4, 8], "alpha": [1, 4]})
    before = snapshot(tmp_path)

    def refuse(self, logs):
        number = getattr(errno, code)
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(JournalFileBackend, "append_logs", refuse)
    args = ["sweep", "--config", str(grown), "--storage", str(storage)]
    refused(
        [*args, "--runs", str(tmp_path / "runs")],
        capsys,
        "Cannot write the results store",
    )
    assert snapshot(tmp_path) == before
