"""The shipped ``demo`` base model: a small SAM pretrained on the 'nuclei' sample data.

Real SAM weights cannot be downloaded everywhere, so the project trains its own
small model of the same structure (image encoder, prompt encoder, mask
decoder), with the micro-sam objective, from a fixed seed, on two CPU cores:

    python -m napari_peft_sam.core.demo --steps 8000   # about 30 min on 2 cores

It writes ``assets/demo_sam.pt`` (plain SAM state dict) and
``assets/demo_sam.json`` (how it was made, and its held-out metrics).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from .checkpoints import atomic_write_json, save_tensors
from .config import DataSpec, ModelSpec, RunConfig, TrainConfig
from .evaluation import evaluate, run_to_end
from .events import StopToken
from .inference import Segmenter
from .methods import make_config
from .models import ARCHITECTURES, demo_weights, random_sam
from .sources import sample_dataset
from .training import train

PRETRAIN = TrainConfig(
    lr=5e-4,
    iterations=8000,
    n_objects=16,
    n_sub_iterations=3,
    warmup=100,
    scheduler="cosine",
    val_interval=500,
    val_patches=4,
    weight_decay=0.01,
    seed=0,
    checkpoint_interval=500,
)


def pretrain(
    minutes: float | None = None,
    steps: int | None = None,
    out: Path | None = None,
    log=print,
) -> dict:
    """Pretrain the demo model from a seed.

    The schedule spans ``PRETRAIN.iterations``; training stops there, after
    ``steps`` steps, or after ``minutes`` of wall time, whichever comes first.
    With ``steps`` the result is reproducible on the CPU.
    """
    out = out or demo_weights()
    torch.manual_seed(PRETRAIN.seed)
    with TemporaryDirectory() as tmp:
        init = Path(tmp) / "init.pt"
        torch.save(
            random_sam(ARCHITECTURES["demo"], seed=PRETRAIN.seed).state_dict(), init
        )
        config = RunConfig(
            DataSpec(dataset="nuclei"),
            ModelSpec("demo", str(init)),
            make_config("full"),
            PRETRAIN,
        )
        stop, started = StopToken(), time.monotonic()
        for event in train(config, Path(tmp) / "run", stop=stop):
            too_long = minutes is not None and time.monotonic() - started > minutes * 60
            if too_long or (steps is not None and getattr(event, "step", 0) >= steps):
                stop.stop()
            if event.kind == "step" and event.step % 100 == 0:
                log(
                    f"step {event.step}: loss {event.loss:.4f} ({event.it_per_s:.2f} it/s)"
                )
        from .checkpoints import load_run

        model, _ = load_run(Path(tmp) / "run", tag="latest")
        steps = torch.load(Path(tmp) / "run" / "state.pt", weights_only=True)["step"]
    save_tensors(out, model.state_dict())
    _, held_out = sample_dataset("nuclei").split(0.2, seed=0)
    organoids = sample_dataset("organoids").split(0.2, seed=0)[1]
    metrics = run_to_end(evaluate(Segmenter(model), held_out)).metrics
    other = run_to_end(evaluate(Segmenter(model), organoids)).metrics
    card = {
        "model": "demo",
        "architecture": ARCHITECTURES["demo"].__dict__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "made_by": "python -m napari_peft_sam.core.demo",
        "reproduce": f"python -m napari_peft_sam.core.demo --steps {steps}",
        "pretraining": {
            **PRETRAIN.__dict__,
            "steps_done": steps,
            "wall_time_cap_min": minutes,
            "data": "sample data 'nuclei' (seeded 80/20 split)",
            "method": "full fine-tuning from random init",
        },
        "held_out_nuclei": metrics,
        "held_out_organoids": other,
    }
    atomic_write_json(out.with_suffix(".json"), card)
    return card


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Pretrain the shipped demo model.")
    parser.add_argument("--minutes", type=float, help="stop after this wall time")
    parser.add_argument("--steps", type=int, help="stop after this many steps")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    card = pretrain(args.minutes, args.steps, args.out)
    print(json.dumps({k: card[k] for k in ("held_out_nuclei", "held_out_organoids")}))


if __name__ == "__main__":
    main()


def run_demo(workdir: Path, log=print, spec=None) -> dict:
    """The main job, offline: the demo sweep on organoids plus the base-model row.

    ``spec`` replaces the ``demo`` preset (tests run the same path on ``tiny``).
    """
    from . import catalog, results
    from .evaluation import evaluate_model
    from .events import run_to_end
    from .executors import launch
    from .presets import preset
    from .runs import base_model_record
    from .splits import held_out
    from .store import add_record

    workdir = Path(workdir)
    storage = str(workdir / "results.journal")
    spec = spec or preset("demo")
    test_set = held_out(spec.run_config(spec.points()[0]))
    log(f"1/3 base model {spec.model!r} on {test_set.describe()}")
    base = run_to_end(
        evaluate_model(test_set, spec.metrics, model=spec.model, device="cpu")
    )
    reference = f"{spec.name}-reference"
    known = (workdir / "results.journal").exists() and any(
        r["study"] == reference for r in results.rows(storage)
    )
    if not known:
        record = base_model_record(
            spec.model,
            spec.dataset,
            base.metrics,
            {"source": test_set.source, "images": len(test_set)},
            params=dict.fromkeys(spec.param_names(), "base"),
        )
        add_record(storage, reference, record.attrs())
    n = len(spec.points())
    iterations = spec.run_config(spec.points()[0]).train.iterations
    log(f"2/3 LoRA sweep: {n} points (rank x alpha), {iterations} steps each")
    launch(spec, storage, workdir / "runs")
    table = results.rows(storage, [spec.name])
    log("3/3 results")
    heatmap = workdir / "heatmap_single_box.png"
    results.heatmap(table, catalog.PRIMARY, "rank", "alpha", heatmap)
    return {
        "storage": storage,
        "base": base.metrics,
        "table": table,
        "heatmap": str(heatmap),
    }
