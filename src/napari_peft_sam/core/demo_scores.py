"""What the demo model's card reports: held-out mSA, mask pieces, click latency.

The held-out sets are images no pretraining run sees: the training
generators' own held-out seeds (``v4``: ``core.synthetic_v4``; ``synthetic``:
v3's ``core.synthetic``), two generators the model is never trained with
(``star_convex`` and ``widefield``, ``core.synthetic_unseen``), and the two
sample domains' held-out parts (``nuclei``; ``organoids``, the domain PEFT
is demonstrated on, where the base model should fail).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .catalog import SINGLE_BOX, SINGLE_POINT
from .data import Dataset
from .evaluation import evaluate, gt_prompts, run_to_end
from .inference import Segmenter
from .sources import sample_dataset
from .synthetic import HELD_OUT_SEED, synthetic_dataset
from .synthetic_unseen import SEED as UNSEEN_SEED
from .synthetic_unseen import unseen_dataset
from .synthetic_v4 import v4_dataset

HELD_OUT_IMAGES = 16
SETS = ("v4", "synthetic", "star_convex", "widefield", "nuclei", "organoids")
UNSEEN = ("star_convex", "widefield")  # generators no demo model is trained with


def held_out_data(n: int = HELD_OUT_IMAGES) -> dict[str, str]:
    """How each held-out set is made (for the card)."""
    split = "seeded 80/20 split, the 20%"
    return {
        "v4": f"{n} images of core.synthetic_v4, seed {HELD_OUT_SEED}",
        "synthetic": f"{n} images of core.synthetic (v3's), seed {HELD_OUT_SEED}",
        "star_convex": f"{n} images of core.synthetic_unseen 'star_convex', seed "
        f"{UNSEEN_SEED} (a generator never trained on)",
        "widefield": f"{n} images of core.synthetic_unseen 'widefield', seed "
        f"{UNSEEN_SEED} (a generator never trained on)",
        "nuclei": f"sample data 'nuclei', {split}",
        "organoids": f"sample data 'organoids', {split}",
    }


def held_out_sets(n: int = HELD_OUT_IMAGES, names=SETS) -> dict[str, Dataset]:
    """The held-out datasets by name (see :func:`held_out_data`)."""
    makers = {
        "v4": lambda: v4_dataset(n, HELD_OUT_SEED),
        "synthetic": lambda: synthetic_dataset(n, HELD_OUT_SEED),
        "star_convex": lambda: unseen_dataset("star_convex", n),
        "widefield": lambda: unseen_dataset("widefield", n),
        "nuclei": lambda: sample_dataset("nuclei").split(0.2, seed=0)[1],
        "organoids": lambda: sample_dataset("organoids").split(0.2, seed=0)[1],
    }
    return {name: makers[name]() for name in names}


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


def score(model, sets: dict[str, Dataset] | None = None, latency=True) -> dict:
    """Held-out mSA (micro-sam's evaluation), mask pieces and click latency."""
    sets = sets or held_out_sets()
    segmenter = Segmenter(model)
    held_out = {
        name: run_to_end(evaluate(segmenter, data)).metrics
        for name, data in sets.items()
    }
    pieces = {name: mask_report(segmenter, data) for name, data in sets.items()}
    out = {"held_out": held_out, "masks": pieces}
    if latency:
        image = next(iter(sets.values()))[0].image
        out["click_latency_ms"] = click_latency_ms(segmenter, image)
    return out
