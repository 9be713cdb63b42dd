"""The training engine: events, stop, resume, faults, quality, and the CLI."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from napari_peft_sam.cli import main
from napari_peft_sam.core import checkpoints, training
from napari_peft_sam.core.config import DataSpec, ModelSpec, RunConfig, TrainConfig
from napari_peft_sam.core.data import Dataset
from napari_peft_sam.core.evaluation import evaluate, run_to_end
from napari_peft_sam.core.events import StopToken
from napari_peft_sam.core.inference import Segmenter
from napari_peft_sam.core.methods import available_methods, make_config
from napari_peft_sam.core.models import load_base_model
from napari_peft_sam.core.sources import sample_dataset
from napari_peft_sam.core.training import TrainingError, train

FAST = {"n_objects": 4, "n_sub_iterations": 2, "val_patches": 2}


@pytest.fixture(scope="module")
def small_data():
    nuclei = sample_dataset("nuclei")
    return Dataset(nuclei.samples[:4], "nuclei subset")


def config(method="lora", values=None, **train):
    settings = {**FAST, "lr": 1e-3, "iterations": 6, "val_interval": 3, **train}
    return RunConfig(
        DataSpec(dataset="nuclei"),
        ModelSpec("tiny"),
        make_config(method, values or {"rank": 2}),
        TrainConfig(**settings),
    )


def drain(generator):
    events = []
    while True:
        try:
            events.append(next(generator))
        except StopIteration as stop:
            return events, stop.value


def test_events_run_folder_and_card(tmp_path, small_data):
    events, result = drain(train(config(), tmp_path / "run", dataset=small_data))
    kinds = [e.kind for e in events]
    assert kinds.count("step") == 6 and kinds.count("validation") == 2
    assert result.steps == 6 and not result.stopped and result.best_metric is not None
    for name in (
        "adapter_best.pt",
        "adapter_latest.pt",
        "card.json",
        "events.jsonl",
        "state.pt",
    ):
        assert (tmp_path / "run" / name).is_file(), name
    logged = [
        json.loads(line)
        for line in (tmp_path / "run/events.jsonl").read_text().splitlines()
    ]
    assert [e["kind"] for e in logged][-1] == "result"
    card = checkpoints.read_card(tmp_path / "run")
    assert card["status"] == "finished" and card["run_config"]["train"]["lr"] == 1e-3
    model, _ = checkpoints.load_run(tmp_path / "run")  # the run reloads
    assert model is not None


def test_stop_token_leaves_a_consistent_checkpoint(tmp_path, small_data):
    stop = StopToken()
    generator = train(
        config(iterations=50), tmp_path / "run", stop=stop, dataset=small_data
    )
    for event in generator:
        if event.kind == "step" and event.step == 2:
            stop.stop()
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["step"] == 2
    assert checkpoints.read_card(tmp_path / "run")["status"] == "stopped"
    checkpoints.load_run(tmp_path / "run", tag="latest")


def test_resumed_run_reproduces_an_uninterrupted_one(tmp_path, small_data):
    cfg = config(iterations=6, checkpoint_interval=3, mask_prob=0.5)
    full, _ = drain(train(cfg, tmp_path / "full", dataset=small_data))
    stop = StopToken()
    for event in train(cfg, tmp_path / "part", stop=stop, dataset=small_data):
        if event.kind == "step" and event.step == 3:
            stop.stop()
    resumed, result = drain(
        train(cfg, tmp_path / "part", resume=True, dataset=small_data)
    )
    assert result.steps == 6
    losses = lambda evs: [e.loss for e in evs if e.kind == "step"]  # noqa: E731
    assert losses(resumed) == losses(full)[3:]
    a = torch.load(tmp_path / "full/adapter_latest.pt", weights_only=True)
    b = torch.load(tmp_path / "part/adapter_latest.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize("method", [m for m in available_methods() if m != "qlora"])
def test_every_method_trains_from_the_cli(tmp_path, method):
    argv = [
        "train",
        "--dataset",
        "organoids",
        "--model",
        "tiny",
        "--method",
        method,
        "--iterations",
        "2",
        "--n-objects",
        "3",
        "--sub-iterations",
        "1",
        "--val-interval",
        "2",
        "--out",
        str(tmp_path / method),
    ]
    assert main(argv) == 0
    assert (tmp_path / method / "adapter_best.pt").is_file()


def test_cli_user_errors_exit_2(tmp_path, capsys):
    base = [
        "train",
        "--dataset",
        "nuclei",
        "--model",
        "tiny",
        "--out",
        str(tmp_path / "r"),
    ]
    for extra, message in [
        (["--method", "lora", "--set", "rank=0"], "rank must be"),
        (["--method", "lora", "--lr", "5"], "lr must be a number > 0"),
        (
            ["--method", "lora", "--iterations", "0"],
            "iterations must be an integer >= 1",
        ),
        (["--method", "nope"], "Unknown PEFT method"),
        (
            ["--method", "lora", "--device", "cuda:0"]
            if not torch.cuda.is_available()
            else ["--method", "lora", "--set", "alpha=-1"],
            "CUDA|alpha must be",
        ),
    ]:
        assert main(base + extra) == 2, extra
        assert message.split("|")[0] in capsys.readouterr().err or "|" in message


def _fail_at(step, error):
    original = training.Trainer.train_step

    def step_fn(self):
        if self.step + 1 == step:
            raise error
        return original(self)

    return step_fn


def test_out_of_memory_gives_advice_and_keeps_the_checkpoint(
    tmp_path, small_data, monkeypatch
):
    monkeypatch.setattr(
        training.Trainer,
        "train_step",
        _fail_at(4, torch.OutOfMemoryError("CUDA out of memory")),
    )
    cfg = config(iterations=10, checkpoint_interval=1)
    with pytest.raises(
        TrainingError,
        match=r"ran out of memory; lower n objects \(--n-objects\).*memory saving.*QLoRA",
    ):
        drain(train(cfg, tmp_path / "run", dataset=small_data))
    state = torch.load(tmp_path / "run/state.pt", weights_only=True)
    assert state["step"] == 3
    checkpoints.load_run(tmp_path / "run", tag="latest")


def test_non_finite_loss_stops_with_a_message(tmp_path, small_data, monkeypatch):
    from napari_peft_sam.core import objective

    original = objective.iterative_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        losses = original(*args, **kwargs)
        if calls["n"] > 3:
            losses.loss = losses.loss * float("nan")
        return losses

    monkeypatch.setattr("napari_peft_sam.core.trainer.iterative_loss", poisoned)
    with pytest.raises(TrainingError, match="loss became nan at step 4"):
        drain(
            train(
                config(iterations=10, checkpoint_interval=1),
                tmp_path / "run",
                dataset=small_data,
            )
        )
    before = torch.load(tmp_path / "run/adapter_latest.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in before.values())


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, small_data, monkeypatch):
    cfg = config(iterations=10, checkpoint_interval=2, val_interval=100)
    real_fsync, saves = os.fsync, {"n": 0}

    def fsync(fd):
        saves["n"] += 1
        if (
            saves["n"] > 3
        ):  # card, then adapter + state at step 2; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(checkpoints.os, "fsync", fsync)
    with pytest.raises(
        TrainingError, match="No space left on device.*previous checkpoint is intact"
    ):
        drain(train(cfg, tmp_path / "run", dataset=small_data))
    monkeypatch.setattr(checkpoints.os, "fsync", real_fsync)
    state = torch.load(tmp_path / "run/state.pt", weights_only=True)
    assert state["step"] == 2
    assert not [p for p in (tmp_path / "run").iterdir() if p.suffix == ".tmp"]
    checkpoints.load_run(tmp_path / "run", tag="latest")


def test_sigkill_then_resume_loses_nothing(tmp_path):
    run = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "napari_peft_sam.cli",
        "train",
        "--dataset",
        "nuclei",
        "--model",
        "tiny",
        "--method",
        "lora",
        "--set",
        "rank=2",
        "--iterations",
        "40",
        "--n-objects",
        "4",
        "--sub-iterations",
        "1",
        "--checkpoint-interval",
        "2",
        "--val-interval",
        "100",
        "--lr",
        "1e-3",
        "--out",
        str(run),
    ]
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        log = run / "events.jsonl"
        if log.exists() and log.read_text().count('"checkpoint"') >= 2:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = torch.load(run / "state.pt", weights_only=True)["step"]
    assert 2 <= saved < 40
    logged_before = [
        json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()
    ]
    assert main(argv[3:] + ["--resume"]) == 0
    logged = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert logged[: len(logged_before)] == logged_before  # nothing earlier lost
    resumed = [e["step"] for e in logged[len(logged_before) :] if e["kind"] == "step"]
    assert resumed == list(range(saved + 1, 41))  # continues from the checkpoint


def test_training_tiny_improves_single_point_msa(tmp_path):
    """Quality: 300 steps of full fine-tuning beat the untrained model on held-out images."""
    train_set, held_out = sample_dataset("nuclei").split(0.2, seed=0)
    cfg = RunConfig(
        DataSpec(dataset="nuclei"),
        ModelSpec("tiny"),
        make_config("full"),
        TrainConfig(
            lr=1e-3,
            iterations=300,
            n_objects=16,
            n_sub_iterations=2,
            val_interval=300,
            scheduler="none",
            val_patches=2,
        ),
    )
    drain(train(cfg, tmp_path / "run", dataset=train_set))
    base, _ = load_base_model("tiny")
    trained, _ = checkpoints.load_run(tmp_path / "run", tag="latest")
    metric = ("single point",)
    before = run_to_end(evaluate(Segmenter(base), held_out, metric)).metrics[
        "single point"
    ]
    after = run_to_end(evaluate(Segmenter(trained), held_out, metric)).metrics[
        "single point"
    ]
    print(f"single point mSA before {before:.3f}, after {after:.3f}")
    assert after > before + 0.02


def test_joint_decoder_training_gives_the_ais_metric(tmp_path, small_data):
    from napari_peft_sam.core.evaluation import evaluate_model

    cfg = config(iterations=2, val_interval=2, with_decoder=True, checkpoint_interval=1)
    drain(train(cfg, tmp_path / "run", dataset=small_data))
    for tag in ("best", "latest"):
        assert (tmp_path / "run" / f"decoder_{tag}.pt").is_file()
    stop = StopToken()  # the decoder resumes with the rest of the state
    stop.stop()
    drain(train(cfg, tmp_path / "run", resume=True, stop=stop, dataset=small_data))
    held_out = Dataset(small_data.samples[:1], "one")
    result = run_to_end(
        evaluate_model(held_out, ("ais", "single box"), run_dir=tmp_path / "run")
    )
    assert result.metrics["ais"] is not None and "ais" not in result.missing
