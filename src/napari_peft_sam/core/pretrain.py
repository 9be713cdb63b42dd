"""Pretrain the shipped ``demo`` base model on synthetic fluorescence nuclei.

Real SAM weights cannot be downloaded everywhere, so the project trains its own
small model of the same structure (image encoder, prompt encoder, mask
decoder), with the micro-sam objective, from a fixed seed, on the CPU:

    python -m napari_peft_sam.core.pretrain --steps 8000

The images come from ``core.synthetic`` (seeded); the held-out images use
another seed. It writes ``assets/demo_sam.pt`` (a plain SAM state dict) and
``assets/demo_sam.json`` (the card: how it was made and what it scores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch

from .catalog import SINGLE_BOX, SINGLE_POINT
from .config import DataSpec, ModelSpec, RunConfig, TrainConfig
from .data import Dataset, Sample
from .errors import UserError
from .evaluation import evaluate, gt_prompts, run_to_end
from .events import StopToken
from .files import atomic_write_json
from .inference import Segmenter
from .methods import make_config
from .models import ARCHITECTURES, demo_weights, file_hash, random_sam
from .sources import sample_dataset
from .synthetic import HELD_OUT_SEED, TRAIN_SEED, synthetic_dataset
from .training import check_resume, train

COMMAND = "python -m napari_peft_sam.core.pretrain"
PRETRAIN = TrainConfig(
    lr=5e-4,
    iterations=10000,
    n_objects=16,
    n_sub_iterations=2,
    warmup=200,
    scheduler="cosine",
    val_interval=500,
    val_patches=8,
    weight_decay=0.01,
    seed=0,
    checkpoint_interval=500,
)
TRAIN_IMAGES = 600
LETTERBOX = 0.2  # share of training images padded like a non-square image
TINT = 0.15  # share of training images shown in colour (one or two channels)
HELD_OUT_IMAGES = 16
PIXEL_MEAN = np.array(
    [123.675, 116.28, 103.53], np.float32
)  # SAM's, 0 after normalising
COLOURS = np.array(
    [[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]], np.float32
)


def _letterbox(rng, image: np.ndarray, labels: np.ndarray):
    """Pad the bottom or right band with SAM's pixel mean, as inference pads.

    ``Segmenter.embed`` resizes an image's longest side to the model's input
    and pads the rest with zeros after normalisation, i.e. with the pixel
    mean. Real images are rarely square, so the model meets such bands at
    inference; here it meets them in training too.
    """
    from .synthetic import clean_labels

    keep = int(rng.uniform(0.5, 0.85) * labels.shape[0])
    band = (slice(keep, None), slice(None))
    if rng.random() < 0.5:
        band = band[::-1]
    image, labels = image.copy(), labels.copy()
    image[band], labels[band] = PIXEL_MEAN, 0
    return image, clean_labels(labels)


def _tint(rng, image: np.ndarray) -> np.ndarray:
    """Nuclei in one or two colour channels, as RGB fluorescence files hold them."""
    return image * COLOURS[rng.integers(len(COLOURS))]


def augment(dataset: Dataset, seed: int, letterbox=LETTERBOX, tint=TINT) -> Dataset:
    """A share of the images letterboxed, another share in colour (seeded)."""
    rng = np.random.default_rng(seed)
    out = []
    for sample in dataset:
        image, labels, name = sample.image, sample.labels, sample.name
        if rng.random() < tint:
            image, name = _tint(rng, image), f"{name} (colour)"
        if rng.random() < letterbox:
            image, labels = _letterbox(rng, image, labels)
            name = f"{name} (letterboxed)"
        if labels.max() > 0:
            out.append(Sample(image, labels, name))
    return Dataset(out, f"{dataset.source}, augmented")


def training_data(n: int = TRAIN_IMAGES, seed: int = TRAIN_SEED) -> Dataset:
    """The pretraining images: synthetic nuclei, some letterboxed or in colour."""
    return augment(synthetic_dataset(n, seed), seed)


def held_out_sets(n_synthetic: int = HELD_OUT_IMAGES) -> dict[str, Dataset]:
    """What the card reports: held-out synthetic images and both sample domains."""
    return {
        "synthetic": synthetic_dataset(n_synthetic, HELD_OUT_SEED),
        "nuclei": sample_dataset("nuclei").split(0.2, seed=0)[1],
        "organoids": sample_dataset("organoids").split(0.2, seed=0)[1],
    }


@torch.no_grad()
def mask_report(segmenter: Segmenter, dataset: Dataset, chunk: int = 64) -> dict:
    """Pieces per predicted mask and per-object IoU, single point and single box.

    A clean mask is one connected piece (4-connectivity, as micro-sam's
    instance segmentation splits them); every extra piece is a false positive
    in mSA. Prompts are the evaluation's: the object's centre, its box.
    """
    from scipy import ndimage as ndi

    point, box = SINGLE_POINT.name, SINGLE_BOX.name
    found = {point: ([], []), box: ([], [])}
    for sample in dataset:
        ids, centres, boxes = gt_prompts(sample.labels)
        emb = segmenter.embed(sample.image)
        for start in range(0, len(ids), chunk):
            part = slice(start, start + chunk)
            points = torch.from_numpy(centres[part])[:, None]
            ones = torch.ones(points.shape[:2], dtype=torch.int64)
            by_prompt = {
                point: segmenter.predict(emb, points, ones, multimask=True),
                box: segmenter.predict(emb, boxes=torch.from_numpy(boxes[part])),
            }
            for name, (masks, _) in by_prompt.items():
                for mask, i in zip(masks.cpu().numpy(), ids[part], strict=True):
                    truth = sample.labels == i
                    found[name][0].append(ndi.label(mask)[1])
                    found[name][1].append((mask & truth).sum() / (mask | truth).sum())
    report = {}
    for name, (pieces, ious) in found.items():
        pieces = np.asarray(pieces)
        report[name] = {
            "pieces_per_mask": float(pieces.mean()),
            "fragmented_share": float(np.mean(pieces > 1)),
            "empty_share": float(np.mean(pieces == 0)),
            "median_iou": float(np.median(ious)),
            "objects": len(pieces),
        }
    return report


def click_latency_ms(segmenter: Segmenter, image: np.ndarray, clicks: int = 50) -> dict:
    """Median time of one click (point, box) once the image is embedded."""
    h, w = image.shape[:2]
    segmenter.segment(image, np.array([[w / 2, h / 2]]), np.array([1]))  # embed
    times = {"point": [], "box": []}
    for k in range(clicks):
        x, y = (k * 37) % w, (k * 53) % h
        for kind in times:
            started = time.perf_counter()
            if kind == "point":
                segmenter.segment(image, np.array([[x, y]]), np.array([1]))
            else:
                box = np.array([x, y, min(w - 1, x + 20), min(h - 1, y + 20)])
                segmenter.segment(image, box=box)
            times[kind].append(time.perf_counter() - started)
    return {kind: 1000 * float(np.median(t)) for kind, t in times.items()}


def score(model, sets: dict[str, Dataset] | None = None) -> dict:
    """Held-out mSA (micro-sam's evaluation), mask pieces and click latency."""
    sets = sets or held_out_sets()
    segmenter = Segmenter(model)
    held_out = {
        name: run_to_end(evaluate(segmenter, data)).metrics
        for name, data in sets.items()
    }
    pieces = {name: mask_report(segmenter, data) for name, data in sets.items()}
    latency = click_latency_ms(segmenter, next(iter(sets.values()))[0].image)
    return {"held_out": held_out, "masks": pieces, "click_latency_ms": latency}


def _train(config: RunConfig, data: Dataset, run: Path, steps, minutes, log):
    """Run the training engine into ``run``; return the model, steps and time.

    A ``run`` that holds a checkpoint is resumed: same settings, except where
    the random initial weights were written (the same seed gives the same
    weights, checked by hash).
    """
    from .checkpoints import load_run
    from .runfolder import read_card

    resume = (run / "state.pt").is_file()
    if resume:
        card = read_card(run)
        # the initial weights were written elsewhere: checked by hash below
        check_resume(config, run, also={"checkpoint"})
        if card["base_model"]["hash"] != file_hash(config.model.checkpoint):
            raise UserError(f"{run} was started from other initial weights.")
        log(f"resuming {run}")
    stop, started = StopToken(), time.monotonic()
    events = train(
        config, run, stop=stop, dataset=data, resume=resume, allow_changes=resume
    )
    for event in events:
        too_long = minutes is not None and time.monotonic() - started > minutes * 60
        if too_long or (steps is not None and getattr(event, "step", 0) >= steps):
            stop.stop()
        if event.kind == "step" and event.step % 100 == 0:
            log(f"step {event.step}: loss {event.loss:.4f} ({event.it_per_s:.2f} it/s)")
        elif event.kind == "validation":
            log(f"step {event.step}: {event.metrics}")
    model, _ = load_run(run, tag="latest")
    done = torch.load(run / "state.pt", weights_only=True)["step"]
    return model, done, time.monotonic() - started


def pretrain(
    steps: int | None = None,
    minutes: float | None = None,
    out: Path | None = None,
    run_dir: Path | None = None,
    log=print,
) -> dict:
    """Pretrain the demo model from a seed; write its weights and card.

    The schedule spans ``PRETRAIN.iterations``; training stops there, after
    ``steps`` steps, or after ``minutes`` of wall time, whichever comes first.
    With ``steps`` the result is reproducible on the CPU. ``run_dir`` keeps
    the training run (checkpoints, events, curves; by default it is removed),
    and a ``run_dir`` that holds a checkpoint is resumed.
    """
    from .checkpoints import save_tensors

    out = Path(out or demo_weights())
    torch.manual_seed(PRETRAIN.seed)
    data = training_data()
    log(f"pretraining data: {data.describe()}")
    with TemporaryDirectory() as tmp:
        init = Path(tmp) / "init.pt"
        arch = ARCHITECTURES["demo"]
        torch.save(random_sam(arch, seed=PRETRAIN.seed).state_dict(), init)
        config = RunConfig(
            DataSpec(val_fraction=0.05),
            ModelSpec("demo", str(init)),
            make_config("full"),
            PRETRAIN,
        )
        run = Path(run_dir) if run_dir else Path(tmp) / "run"
        model, done, wall = _train(config, data, run, steps, minutes, log)
    save_tensors(out, model.state_dict())
    card = {
        "model": "demo",
        "architecture": ARCHITECTURES["demo"].__dict__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "made_by": COMMAND,
        "reproduce": f"{COMMAND} --steps {done}",
        "pretraining": {
            **PRETRAIN.__dict__,
            "steps_done": done,
            "wall_time_min": round(wall / 60, 1),
            "wall_time_cap_min": minutes,
            "torch_threads": torch.get_num_threads(),
            "data": (
                f"{len(data)} synthetic fluorescence-nuclei images "
                f"(napari_peft_sam.core.synthetic, seed {TRAIN_SEED}; "
                f"{LETTERBOX:.0%} letterboxed, {TINT:.0%} in colour), 5% of them "
                "for validation"
            ),
            "method": "full fine-tuning from random init",
        },
        "held_out_data": {
            "synthetic": f"{HELD_OUT_IMAGES} images of core.synthetic, seed {HELD_OUT_SEED}",
            "nuclei": "sample data 'nuclei', seeded 80/20 split, the 20%",
            "organoids": "sample data 'organoids', seeded 80/20 split, the 20%",
        },
        **score(model),
    }
    atomic_write_json(out.with_suffix(".json"), card)
    return card


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Pretrain the shipped demo model.")
    parser.add_argument("--steps", type=int, help="stop after this many steps")
    parser.add_argument("--minutes", type=float, help="stop after this wall time")
    parser.add_argument(
        "--out", type=Path, help="weights file (default: the package's)"
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="keep the training run here; resume it if it holds a checkpoint",
    )
    args = parser.parse_args(argv)
    card = pretrain(args.steps, args.minutes, args.out, args.run_dir)
    print(json.dumps({k: card[k] for k in ("held_out", "masks", "click_latency_ms")}))


if __name__ == "__main__":
    main()
