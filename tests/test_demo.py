"""The main job offline: the shipped demo model, the improvement PEFT brings, the demo sweep."""

import json
import signal
import subprocess
import sys
import time

from napari_peft_sam.cli import main
from napari_peft_sam.core import results
from napari_peft_sam.core.checkpoints import load_run
from napari_peft_sam.core.evaluation import evaluate, run_to_end
from napari_peft_sam.core.inference import Segmenter
from napari_peft_sam.core.methods import make_config
from napari_peft_sam.core.models import demo_weights, load_base_model
from napari_peft_sam.core.presets import preset
from napari_peft_sam.core.sources import sample_dataset
from napari_peft_sam.core.training import train

PROMPTS = ("single point", "single box")


def test_demo_model_ships_with_its_card():
    assert demo_weights().is_file() and demo_weights().stat().st_size < 8 * 2**20
    card = json.loads(demo_weights().with_suffix(".json").read_text())
    assert card["made_by"] == "python -m napari_peft_sam.core.pretrain"
    assert card["reproduce"].startswith(card["made_by"] + " --steps ")
    held_out, masks = card["held_out"], card["masks"]
    for domain in ("synthetic", "nuclei"):  # segments nuclei, fails on organoids
        assert (
            held_out[domain]["single box"] > held_out["organoids"]["single box"] + 0.2
        )
    for prompt in PROMPTS:  # clean masks: about one piece per object
        assert masks["synthetic"][prompt]["pieces_per_mask"] < 1.3, prompt
    assert max(card["click_latency_ms"].values()) < 10


def test_demo_card_scores_generators_it_never_trained_on_beside_its_predecessor():
    from napari_peft_sam.core.demo_scores import UNSEEN

    card = json.loads(demo_weights().with_suffix(".json").read_text())
    previous, trained_on = card["previous"], card["pretraining"]["data"]
    assert card["version"] == previous["version"] + 1
    for name in UNSEEN:  # held out: made by code the training data never came from
        assert name in card["held_out_data"] and "synthetic_unseen" not in trained_on
        for prompt in PROMPTS:
            assert card["held_out"][name][prompt] > previous["held_out"][name][prompt]
    for name in ("v4", "synthetic", *UNSEEN, "nuclei"):
        assert card["masks"][name]["single box"]["pieces_per_mask"] <= 1.2, name
        assert card["masks"][name]["single point"]["pieces_per_mask"] <= 1.2, name


def _box_ious(sam, samples):
    """Per-object IoU of the mask a box prompt gives, on held-out images."""
    import numpy as np
    import torch

    from napari_peft_sam.core.evaluation import gt_prompts

    segmenter, ious = Segmenter(sam), []
    for sample in samples:
        ids, _, boxes = gt_prompts(sample.labels)
        masks, _ = segmenter.predict(
            segmenter.embed(sample.image), boxes=torch.from_numpy(boxes)
        )
        for mask, i in zip(masks.numpy(), ids, strict=True):
            truth = sample.labels == i
            ious.append((mask & truth).sum() / max((mask | truth).sum(), 1))
    return float(np.median(ious))


def test_demo_model_segments_its_own_domain_not_the_new_one():
    sam, info = load_base_model("demo")
    assert info.source == "package"
    nuclei = sample_dataset("nuclei").split(0.2, seed=0)[1]
    organoids = sample_dataset("organoids").split(0.2, seed=0)[1]
    on_nuclei, on_organoids = _box_ious(sam, nuclei), _box_ious(sam, organoids)
    print(
        f"median per-object IoU of box prompts: nuclei {on_nuclei:.2f}, organoids {on_organoids:.2f}"
    )
    assert on_nuclei > 0.6 and on_organoids < on_nuclei - 0.3


def test_lora_raises_msa_on_the_new_domain_by_at_least_0_1(tmp_path):
    """Default LoRA (rank 32, alpha 1, q and v) for a few CPU minutes on organoids.

    The demo preset's recipe for 1000 steps (about 100 s on 2 cores), judged on
    the four held-out organoid images: the untuned demo model scores 0.000 on
    both; measured after tuning +0.33 single point and +0.27 single box (other
    seeds and 800 to 1200 steps gave +0.27..0.33 and +0.16..0.24).
    """
    spec = preset("demo")
    config = spec.run_config({"rank": 32, "alpha": 1})
    assert (config.method.rank, config.method.alpha) == (
        make_config("lora").rank,
        make_config("lora").alpha,
    )  # the method's defaults
    config.train.iterations = 1000
    train_set, held_out = sample_dataset("organoids").split(0.2, seed=0)
    run_to_end(train(config, tmp_path / "run", dataset=train_set))
    base, _ = load_base_model("demo")
    tuned, _ = load_run(tmp_path / "run", tag="latest")
    before = run_to_end(evaluate(Segmenter(base), held_out, PROMPTS)).metrics
    after = run_to_end(evaluate(Segmenter(tuned), held_out, PROMPTS)).metrics
    print(f"organoids held-out mSA before {before}, after {after}")
    for name in PROMPTS:
        assert after[name] >= before[name] + 0.1, name


def test_demo_sweep_killed_half_way_then_rerun_finishes_without_redoing(
    tmp_path, capsys
):
    storage = tmp_path / "demo.journal"
    argv = [
        "sweep",
        "--preset",
        "demo",
        "--storage",
        str(storage),
        "--runs",
        str(tmp_path / "runs"),
        "--set",
        "iterations=6",
        "--set",
        "val_interval=3",
        "--set",
        "warmup=0",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "napari_peft_sam.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        runs = tmp_path / "runs"
        finished = (
            [
                p
                for p in runs.glob("demo-t*/card.json")
                if "evaluations" in p.read_text()
            ]
            if runs.exists()
            else []
        )
        if len(finished) >= 2:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {
        r["trial"]
        for r in results.rows(str(storage), ["demo"])
        if r["status"] == "complete"
    }
    assert 0 < len(done_before) < 4
    assert main(argv) == 0
    table = results.rows(str(storage), ["demo"])
    assert len(table) == 4 and {r["status"] for r in table} == {"complete"}
    assert done_before <= {
        r["trial"] for r in table
    }  # finished points were kept, not redone
    assert main(["report", "--storage", str(storage), "--study", "demo"]) == 0
    report = capsys.readouterr().out.splitlines()
    header_line = next(
        line for line in report if line.startswith("|") and "alpha" in line
    )
    header = [c.strip() for c in header_line.strip("|").split("|")]
    assert header == ["alpha", "rank", "single box", "single point", "ib", "ip"]
