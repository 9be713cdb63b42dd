"""Nothing lost, nothing leaked: each bad input gets exit 2 and one sentence,
and no file the user had changes (issue 15's findings, one test each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from napari_peft_sam.cli import main
from tests.helpers import one_sentence, snapshot

QUICK = [
    "--model", "tiny", "--method", "lora", "--set", "rank=2",
    "--iterations", "3", "--n-objects", "2", "--sub-iterations", "1",
    "--val-interval", "3", "--checkpoint-interval", "3",
]  # fmt: skip


def train(tmp_path, out="run", *extra):
    return main(
        [
            "train",
            "--dataset",
            "organoids",
            *QUICK,
            "--out",
            str(tmp_path / out),
            *extra,
        ]
    )


@pytest.fixture
def run_dir(tmp_path):
    assert train(tmp_path) == 0
    return tmp_path / "run"


# 1 -- a read never damages a file that is not a results store ---------------------


@pytest.mark.parametrize(
    "content",
    [b"alpha,rank,single box\n1,2,0.185\n4,8,0.204", os.urandom(300)],
    ids=["csv", "random"],
)
def test_report_and_sweep_refuse_a_file_that_is_not_a_journal(
    tmp_path, capsys, content
):
    path = tmp_path / "r.csv"
    path.write_bytes(content)
    before = snapshot(tmp_path)
    assert main(["report", "--storage", str(path)]) == 2
    assert "not a results store" in one_sentence(capsys)
    argv = [
        "sweep",
        "--preset",
        "demo",
        "--storage",
        str(path),
        "--runs",
        str(tmp_path / "x"),
    ]
    assert main(argv) == 2
    assert "not a results store" in one_sentence(capsys)
    assert snapshot(tmp_path) == before


def test_a_torn_journal_is_read_as_is_and_repaired_only_by_a_writer(tmp_path):
    from napari_peft_sam.core.records import RunRecord
    from napari_peft_sam.core.store import add_record, open_storage, rows

    storage = tmp_path / "results.journal"
    record = RunRecord(
        "r", "d", "tiny", "lora", {"rank": 1}, metrics={"single box": 0.5}
    )
    add_record(str(storage), "s", record.attrs())
    torn = storage.read_bytes() + b'{"op_code": 5, "worker'
    storage.write_bytes(torn)
    assert [r["metrics"] for r in rows(str(storage))] == [{"single box": 0.5}]
    assert storage.read_bytes() == torn  # the reader wrote nothing
    open_storage(str(storage), write=True)
    assert storage.read_bytes().endswith(b"\n")
    backups = list(tmp_path.glob("results.journal.torn-*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == torn


# 2 -- no password lands on disk ---------------------------------------------------------


def test_a_database_password_never_reaches_a_file(tmp_path, postgres_url, capsys):
    password = "s3cret-Pw"
    url = postgres_url.replace(":unused@", f":{password}@")
    spec = {
        "name": "pw",
        "dataset": "organoids",
        "model": "tiny",
        "method": "lora",
        "grid": {"rank": [2]},
        "fixed": {
            "iterations": 2,
            "n_objects": 2,
            "n_sub_iterations": 1,
            "val_interval": 2,
        },
        "metrics": ["single box"],
        "eval_images": 1,
    }
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    runs = tmp_path / "runs"
    argv = ["sweep", "--config", str(tmp_path / "spec.yaml"), "--storage", url]
    assert main([*argv, "--runs", str(runs)]) == 0
    assert main(["report", "--storage", url]) == 0
    printed = capsys.readouterr()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if password.encode() in p.read_bytes()]
    assert password not in printed.out + printed.err
    cards = list(runs.rglob("card.json"))
    command = json.loads(cards[0].read_text())["command"]
    assert command.startswith("napari-peft-sam train --dataset organoids --model tiny")


def test_an_unreachable_database_is_one_sentence(capsys):
    code = main(["report", "--storage", "postgresql://me:pw@127.0.0.1:9/nothing"])
    assert code == 2
    err = one_sentence(capsys)
    assert "Cannot open the database" in err and ":pw@" not in err


# 3, 4 -- a run folder has one owner; nothing the user had is overwritten ------------


def test_two_trainings_into_one_folder_the_second_is_refused(tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "napari_peft_sam.cli", "train", "--dataset", "organoids",
        *QUICK[:-8], "--iterations", "400", "--n-objects", "2", "--sub-iterations",
        "1", "--val-interval", "400", "--out", str(out),
    ]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "card.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert "in use by another training run" in second.stderr
        assert second.stderr.count("\n") == 1
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["kind"] == "step"]
    assert steps == list(range(1, len(steps) + 1))  # one run's events only


def test_a_folder_with_files_but_no_card_is_not_touched(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "state.pt").write_bytes(b"my own file")
    (out / "notes.txt").write_text("keep me")
    before = snapshot(out)
    assert train(tmp_path, "mine") == 2
    assert "already holds files" in one_sentence(capsys)
    assert snapshot(out) == before


def test_an_existing_file_as_out_and_early_failures_leave_nothing(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert train(tmp_path, "a_file") == 2
    assert "is a file" in one_sentence(capsys)
    assert (
        main(["train", "--dataset", "nope", *QUICK, "--out", str(tmp_path / "new")])
        == 2
    )
    one_sentence(capsys)
    assert not (tmp_path / "new").exists()  # the failed start left no empty folder


# 5 -- the card keeps every update; a resume with other settings is refused ----------


def test_evaluations_survive_a_resume_and_changed_settings_are_refused(run_dir, capsys):
    from napari_peft_sam.core.runfolder import read_card

    assert main(["evaluate", "--run", str(run_dir), "--dataset", "organoids",
                 "--split", "val", "--metrics", "single box"]) == 0  # fmt: skip
    assert len(read_card(run_dir)["evaluations"]) == 1
    capsys.readouterr()
    assert main(["train", "--out", str(run_dir), "--resume", "--lr", "0.5"]) == 2
    assert "other settings" in one_sentence(capsys)
    assert main(["train", "--out", str(run_dir), "--resume", "--iterations", "5"]) == 0
    card = read_card(run_dir)
    assert card["steps"] == 5 and card["status"] == "finished"
    assert len(card["evaluations"]) == 1 and "single box" in card["metrics"]
    assert main(["train", "--out", str(run_dir), "--resume", "--iterations", "6",
                 "--lr", "0.002", "--allow-changes"]) == 0  # fmt: skip


# 6, 7 -- every way a run ends leaves a folder to resume -------------------------------


def test_a_nan_loss_before_the_first_checkpoint_can_be_resumed(
    tmp_path, monkeypatch, capsys
):
    from napari_peft_sam.core import training
    from napari_peft_sam.core.runfolder import read_card

    original = training.Trainer._loss

    def diverge(self, *args, **kwargs):
        loss, mask, iou = original(self, *args, **kwargs)
        return (loss * float("nan"), mask, iou) if self.step == 2 else (loss, mask, iou)

    monkeypatch.setattr(training.Trainer, "_loss", diverge)
    assert train(tmp_path) == 2
    assert "lower the learning rate" in one_sentence(capsys)
    assert read_card(tmp_path / "run")["status"].startswith("failed")
    assert not (tmp_path / "run" / "state.pt").exists()  # before the first checkpoint
    monkeypatch.setattr(training.Trainer, "_loss", original)
    assert main(["train", "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert read_card(tmp_path / "run")["status"] == "finished"


def test_sigterm_saves_the_step_says_how_to_resume_and_resume_finishes(tmp_path):
    from napari_peft_sam.core.runfolder import read_card

    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "napari_peft_sam.cli", "train", "--dataset", "organoids",
        "--model", "tiny", "--method", "lora", "--iterations", "2000", "--n-objects",
        "2", "--sub-iterations", "1", "--val-interval", "2000",
        "--checkpoint-interval", "1000", "--out", str(out),
    ]  # fmt: skip
    job = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        log = out / "events.jsonl"
        if log.exists() and log.read_text().count('"step"') >= 3:
            break
        time.sleep(0.2)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
    assert f"Resume with: napari-peft-sam train --out {out} --resume" in err
    card = read_card(out)
    assert card["status"] == "SIGTERM" and (out / "state.pt").exists()
    stopped_at = card["steps"]
    assert 3 <= stopped_at < 1000  # saved at the step it stopped, not the last interval
    done = subprocess.run(
        [*command[:-2], "--out", str(out), "--resume", "--iterations", str(stopped_at + 2)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert read_card(out)["steps"] == stopped_at + 2


# 8, 9 -- sweeps that cannot succeed say so -------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dataset": "nowhere"}, "Unknown dataset"),
        ({"model": "vit_q"}, "Unknown model"),
        ({"name": "../../x"}, "may hold only letters"),
    ],
)
def test_sweeps_refuse_impossible_specs(tmp_path, capsys, change, message):
    spec = {"name": "s", "dataset": "organoids", "model": "tiny", "method": "lora",
            "grid": {"rank": [2]}} | change  # fmt: skip
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    code = main(["sweep", "--config", str(tmp_path / "spec.yaml"),
                 "--storage", str(tmp_path / "r.journal"), "--runs", str(tmp_path / "runs")])  # fmt: skip
    assert code == 2 and message in one_sentence(capsys)
    assert not (tmp_path / "r.journal").exists() and not (tmp_path / "x").exists()


def test_sweep_workers_and_runs_are_checked(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    base = ["sweep", "--preset", "demo", "--storage", str(tmp_path / "r.journal")]
    assert main([*base, "--runs", str(tmp_path / "afile")]) == 2
    assert "is a file" in one_sentence(capsys)
    assert main([*base, "--workers", "0"]) == 2
    assert "--workers" in one_sentence(capsys)
    assert main([*base, "--search", "-1"]) == 2
    one_sentence(capsys)


def test_a_sweep_whose_every_point_fails_exits_non_zero(tmp_path, capsys, monkeypatch):
    from napari_peft_sam.core import worker

    def fail(*args, **kwargs):
        raise RuntimeError("this point cannot run")

    monkeypatch.setattr(worker, "run_point", fail)
    spec = {"name": "f", "dataset": "organoids", "model": "tiny", "method": "lora",
            "grid": {"rank": [2]}, "max_retries": 0}  # fmt: skip
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    code = main(["sweep", "--config", str(tmp_path / "spec.yaml"),
                 "--storage", str(tmp_path / "r.journal"), "--runs", str(tmp_path / "runs")])  # fmt: skip
    assert code == 1
    assert "no point of the sweep succeeded" in capsys.readouterr().err


def test_slurm_requests_are_checked_against_the_partition(tmp_path, monkeypatch):
    from napari_peft_sam.core.errors import UserError
    from napari_peft_sam.core.executors import partition_nodes, slurm_request

    sinfo = tmp_path / "sinfo"
    sinfo.write_text(
        "#!/bin/sh\necho 'cpu*|4|15000|(null)'\necho 'gpu|32|256000|gpu:a100:4'\n"
    )
    sinfo.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    cpu = partition_nodes()
    assert (cpu.partition, cpu.cpus, cpu.gpus) == ("cpu", 4, 0)
    assert slurm_request({}, cpu) == {"gpus": 0, "cpus": 4, "mem": 13}
    assert slurm_request({"partition": "gpu"})["gpus"] == 1
    with pytest.raises(UserError, match="no GPUs per node; pass --gpus 0"):
        slurm_request({"gpus": 1}, cpu)
    with pytest.raises(UserError, match="pass --cpus 4"):
        slurm_request({"cpus": 8}, cpu)
    with pytest.raises(UserError, match="--mem"):
        slurm_request({"mem": 32}, cpu)
    with pytest.raises(UserError, match="no partition 'big'"):
        partition_nodes("big")


# 10 -- exit 2 with one sentence, no traceback -----------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--weight-decay", "nan"], "weight_decay must be"),
        (["--seed", "-1"], "seed must be"),
        (["--image-size", "-16"], "image size must be"),
        (["--image-size", "0"], "image size must be"),
        (["--set", "alpha=inf"], "alpha must be"),
        (["--set", "rank=abc"], "rank must be"),
        (["--lr", "1e5"], "lr must be"),
    ],
)
def test_impossible_training_settings(tmp_path, capsys, extra, message):
    assert train(tmp_path, "run", *extra) == 2
    assert message in one_sentence(capsys)
    assert not (tmp_path / "run").exists()


def test_damaged_or_foreign_run_files(run_dir, tmp_path, capsys):
    adapter = run_dir / "adapter_best.pt"
    good = adapter.read_bytes()
    adapter.write_bytes(good[: len(good) // 2])  # truncated
    argv = [
        "evaluate",
        "--run",
        str(run_dir),
        "--dataset",
        "organoids",
        "--split",
        "val",
    ]
    assert main(argv) == 2
    assert "cannot be read" in one_sentence(capsys)
    assert main(["export", "--run", str(run_dir), "--format", "merged",
                 "--out", str(tmp_path / "m.pt")]) == 2  # fmt: skip
    one_sentence(capsys)
    assert train(tmp_path, "rank4", "--set", "rank=4") == 0
    capsys.readouterr()
    # another rank's adapter in this run: same tensor names, other shapes
    adapter.write_bytes((tmp_path / "rank4" / "adapter_best.pt").read_bytes())
    assert main(argv) == 2
    assert "other shapes" in one_sentence(capsys)
    (run_dir / "state.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "--out", str(run_dir), "--resume"]) == 2
    assert "state.pt cannot be read" in one_sentence(capsys)
    (run_dir / "card.json").write_text("{ not json")
    assert main(argv) == 2
    assert "not valid JSON" in one_sentence(capsys)
    (run_dir / "card.json").write_text(
        json.dumps({"format": "napari-peft-sam/run-card"})
    )
    assert main(argv) == 2
    assert "damaged" in one_sentence(capsys)


@pytest.mark.parametrize(
    "content, message",
    [
        ("grid: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        (None, "not a file"),
    ],
)
def test_bad_sweep_configs(tmp_path, capsys, content, message):
    config = tmp_path / "spec.yaml"
    if content is None:
        config.mkdir()
    else:
        config.write_text(content)
    code = main(
        ["sweep", "--config", str(config), "--storage", str(tmp_path / "r.journal")]
    )
    assert code == 2 and message in one_sentence(capsys)


def test_bad_sweep_overrides_and_reports(tmp_path, capsys):
    storage = str(tmp_path / "r.journal")
    base = ["sweep", "--preset", "demo", "--storage", storage]
    assert main([*base, "--set", "iterations=abc"]) == 2
    assert "iterations must be" in one_sentence(capsys)
    assert main(["report", "--storage", str(tmp_path)]) == 2
    assert "is a folder" in one_sentence(capsys)


def test_evaluate_iterations_and_tuning_on_evaluated_images(tmp_path, capsys):
    base = ["evaluate", "--model", "tiny", "--dataset", "organoids"]
    assert main([*base, "--iterations", "0"]) == 2
    assert "--iterations" in one_sentence(capsys)
    assert main([*base, "--metrics", "amg", "--tune-on", "val", "--split", "test"]) == 2
    assert "also evaluated" in one_sentence(capsys)
    assert main([*base, "--metrics", "nonsense"]) == 2
    assert "Unknown metric" in one_sentence(capsys)


def test_evaluate_prints_metrics_even_when_the_card_cannot_take_them(
    run_dir, capsys, monkeypatch
):
    from napari_peft_sam.core import runfolder

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runfolder, "atomic_write_json", read_only)
    code = main(["evaluate", "--run", str(run_dir), "--dataset", "organoids",
                 "--split", "val", "--metrics", "single box", "--json"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 2 and "single box" in json.loads(out.out.splitlines()[-1])
    assert "computed but not stored" in out.err and "could not be updated" in out.err


# 11, 12 ---------------------------------------------------------------------------------


def test_a_one_pixel_image_says_what_is_wrong(tmp_path, capsys):
    import tifffile

    for kind in ("images", "labels"):
        (tmp_path / kind).mkdir()
        tifffile.imwrite(tmp_path / kind / "a.tif", [[1]])
    code = main(["train", "--images", str(tmp_path / "images"), "--labels",
                 str(tmp_path / "labels"), *QUICK, "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2 and "1 x 1 pixels" in one_sentence(capsys)
    assert not (tmp_path / "run").exists()


def test_written_files_follow_the_umask(tmp_path):
    from napari_peft_sam.core.files import UMASK, atomic_write_text

    path = atomic_write_text(tmp_path / "x.txt", "x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~UMASK


def test_reports_create_nothing(tmp_path, capsys, run_dir):
    from napari_peft_sam.core.records import RunRecord
    from napari_peft_sam.core.store import add_record

    storage = tmp_path / "results.journal"
    add_record(
        str(storage), "s", RunRecord("r", "d", "tiny", "lora", {"rank": 1}).attrs()
    )
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n1,2\n")
    before = snapshot(tmp_path)
    assert main(["report", "--storage", str(storage), "--study", "typo"]) == 2
    assert "no study 'typo'" in one_sentence(capsys)
    assert main(["report", "--storage", str(tmp_path / "a" / "b" / "c.log")]) == 2
    one_sentence(capsys)
    for argv in (
        ["report", "--storage", str(storage)],
        ["report", "--storage", str(storage), "--format", "csv"],
        ["data", "--dataset", "organoids"],
        ["methods", "--json"],
        ["models"],
        ["evaluate", "--model", "tiny", "--dataset", "organoids", "--split", "val",
         "--metrics", "single box"],
    ):  # fmt: skip
        assert main(argv) == 0, argv
    capsys.readouterr()
    assert snapshot(tmp_path) == before


def test_the_gui_listener_survives_a_client_with_a_wrong_key():
    import threading
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client, Listener

    from napari_peft_sam.core.service import accept

    listener = Listener(authkey=b"k" * 32)
    got = []

    def clients():
        try:
            Client(listener.address, authkey=b"w" * 32)  # a wrong key
        except (AuthenticationError, OSError, EOFError):
            got.append("refused")
        conn = Client(listener.address, authkey=b"k" * 32)
        conn.send("the real child")
        conn.recv()

    thread = threading.Thread(target=clients, daemon=True)
    thread.start()
    try:
        conn = accept(listener, lambda: False, tries=30)
        assert conn is not None and conn.recv() == "the real child"
        conn.send("ok")
        thread.join(30)
        assert got == ["refused"]
    finally:
        listener.close()
