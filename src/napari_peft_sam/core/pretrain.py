"""Pretrain the shipped ``demo`` base model on synthetic fluorescence nuclei.

Real SAM weights cannot be downloaded everywhere, so the project trains its own
small model of the same structure (image encoder, prompt encoder, mask
decoder), with the micro-sam objective, from a fixed seed, on the CPU:

    python -m napari_peft_sam.core.pretrain --steps 10000

The images come from ``core.synthetic_v4`` (domain-randomised nuclei, seeded),
half of them changed by ``core.photometric``; the held-out images use other
seeds and two generators it never trains on (``core.demo_scores``). ``--init``
continues from earlier weights (demo model v4 continues v3). It writes
``assets/demo_sam.pt`` (a plain SAM state dict) and ``assets/demo_sam.json``
(the card: how it was made and what it scores, beside the previous model).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch

from .config import DataSpec, ModelSpec, RunConfig, TrainConfig
from .data import Dataset, Sample
from .demo_scores import HELD_OUT_IMAGES, held_out_data, held_out_sets, score
from .errors import UserError
from .events import StopToken
from .files import atomic_write_json
from .methods import make_config
from .models import ARCHITECTURES, demo_weights, file_hash, random_sam
from .photometric import PROBABILITY, augment_photometric
from .synthetic import TRAIN_SEED
from .synthetic_v4 import v4_dataset
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
TRAIN_IMAGES = 1200
VERSION = 5
LETTERBOX = 0.2  # share of training images padded like a non-square image
TINT = 0.15  # share of training images shown in colour (one or two channels)
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


def training_data(
    n: int = TRAIN_IMAGES, seed: int = TRAIN_SEED, photometric: float = PROBABILITY
) -> Dataset:
    """The pretraining images: v4 nuclei, photometric changes, letterbox, colour."""
    data = augment_photometric(v4_dataset(n, seed), seed + 1, photometric)
    return augment(data, seed)


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


def _describe(n: int, photometric: float, init: tuple | None) -> dict:
    return {
        "data": (
            f"{n} domain-randomised synthetic nuclei images (napari_peft_sam.core."
            f"synthetic_v4, seed {TRAIN_SEED}; {photometric:.0%} changed by core."
            f"photometric, {LETTERBOX:.0%} letterboxed, {TINT:.0%} in colour), 5% "
            "of them for validation"
        ),
        "method": (
            f"full fine-tuning, continued from {init[0]} ({init[1][:16]})"
            if init
            else "full fine-tuning from random init"
        ),
    }


def pretrain(
    steps: int | None = None,
    minutes: float | None = None,
    out: Path | None = None,
    run_dir: Path | None = None,
    log=print,
    init: Path | None = None,
    previous: Path | None = None,
    **settings,
) -> dict:
    """Pretrain the demo model; write its weights and card.

    The schedule spans ``iterations`` (``PRETRAIN``'s unless given in
    ``settings``, which replace any ``TrainConfig`` field); training stops
    there, after ``steps`` steps, or after ``minutes`` of wall time, whichever
    comes first. With ``steps`` the result is reproducible on the CPU.
    ``init`` continues from a demo state dict (default: random weights from
    the seed); ``previous`` (default: ``init``) is scored on the same held-out
    sets for the card's ``previous`` entry. ``run_dir`` keeps the training run
    (checkpoints, events, curves; by default it is removed), and a ``run_dir``
    that holds a checkpoint is resumed.
    """
    from .checkpoints import save_tensors
    from .models import load_base_model

    out = Path(out or demo_weights())
    train_settings = dataclasses.replace(PRETRAIN, **settings)  # PRETRAIN unchanged
    torch.manual_seed(train_settings.seed)
    data = training_data()
    log(f"pretraining data: {data.describe()}")
    sets = held_out_sets()
    with TemporaryDirectory() as tmp:
        start = Path(tmp) / "init.pt"
        if init:  # a copy: ``out`` may be the very file it starts from
            shutil.copyfile(init, start)
        else:
            arch = ARCHITECTURES["demo"]
            sam = random_sam(arch, seed=train_settings.seed)
            torch.save(sam.state_dict(), start)
        before = None
        if previous or init:
            shutil.copyfile(previous or init, Path(tmp) / "prev.pt")
            old, _ = load_base_model("demo", Path(tmp) / "prev.pt")
            before = {"file_hash": file_hash(Path(tmp) / "prev.pt")}
            before |= score(old, sets, latency=False)
        config = RunConfig(
            DataSpec(val_fraction=0.05),
            ModelSpec("demo", str(start)),
            make_config("full"),
            train_settings,
        )
        run = Path(run_dir) if run_dir else Path(tmp) / "run"
        model, done, wall = _train(config, data, run, steps, minutes, log)
        init_hash = file_hash(start) if init else None
    save_tensors(out, model.state_dict())
    flags = "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in settings.items() if v is not None
    )
    card = {
        "model": "demo",
        "version": VERSION,
        "architecture": ARCHITECTURES["demo"].__dict__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "made_by": COMMAND,
        "reproduce": f"{COMMAND} --steps {done}{flags}"
        + (f" --init {Path(init).name}" if init else ""),
        "pretraining": {
            **dataclasses.asdict(config.train),  # effective settings
            "steps_done": done,
            "wall_time_min": round(wall / 60, 1),
            "wall_time_cap_min": minutes,
            "torch_threads": torch.get_num_threads(),
            "init_hash": init_hash,
            **_describe(len(data), PROBABILITY, init and (Path(init).name, init_hash)),
        },
        "held_out_data": held_out_data(HELD_OUT_IMAGES),
        **score(model, sets),
    }
    if before:
        card["previous"] = {"version": VERSION - 1, **before}
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
    parser.add_argument(
        "--init", type=Path, help="start from these demo weights (default: random)"
    )
    parser.add_argument(
        "--previous", type=Path, help="weights to score beside (default: --init)"
    )
    parser.add_argument("--iterations", type=int, help="schedule length (steps)")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--warmup", type=int, help="learning-rate warm-up steps")
    args = parser.parse_args(argv)
    settings = {
        k: getattr(args, k)
        for k in ("iterations", "lr", "warmup")
        if getattr(args, k) is not None
    }
    card = pretrain(
        args.steps,
        args.minutes,
        args.out,
        args.run_dir,
        init=args.init,
        previous=args.previous,
        **settings,
    )
    print(json.dumps({k: card[k] for k in ("held_out", "masks", "click_latency_ms")}))


if __name__ == "__main__":
    main()
