"""A simulated annotator: prompts from ground truth, counts clicks, commits objects.

It prompts the way micro-sam's iterative evaluation does (``core.evaluation``:
an object's box or centre point first, then one positive and one negative
corrective point per round where the mask is wrong, ``core.prompts``), and
commits an object as soon as its mask reaches an IoU threshold with the true
object, or gives up prompting after a click budget. A box or a point is one
click, each corrective round two. An object that runs out of budget is
committed as the true object (the annotator paints it by hand, which the
budget's clicks understate) and flagged ``reached=False``.

Tests and ``benchmarks/bench_annotate.py`` use it to measure whether a
retrained model lowers the clicks per object, round after round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .evaluation import _rounds, gt_prompts  # one prompting engine for both
from .inference import Segmenter


@dataclass(frozen=True)
class Rules:
    """How the simulated annotator works.

    Parameters
    ----------
    start
        ``box`` or ``point``: the first prompt of every object.
    iou
        Commit an object once its mask's IoU with the true object reaches this.
    budget
        Clicks after which prompting stops (1 + 2 per corrective round: 15 is
        micro-sam's 8 evaluation rounds).
    seed
        Seeds the corrective points' draws.
    """

    start: str = "box"
    iou: float = 0.8
    budget: int = 15
    seed: int = 0

    def __post_init__(self) -> None:
        if self.start not in ("box", "point"):
            raise ValueError(f"start is 'box' or 'point', not {self.start!r}")
        if self.budget < 1 or not 0 < self.iou <= 1:
            raise ValueError("budget must be >= 1 and iou in (0, 1]")

    @property
    def rounds(self) -> int:
        """Prompting rounds the budget allows: the first prompt, then pairs."""
        return 1 + (self.budget - 1) // 2


@dataclass
class ObjectEffort:
    """One object: clicks spent, the committed mask's IoU, whether it passed."""

    object_id: int
    clicks: int
    iou: float
    reached: bool
    first_iou: float = 0.0  # after the first prompt alone: how good the model is


@dataclass
class ImageEffort:
    """What annotating one image committed and cost."""

    labels: np.ndarray  # the committed objects, ids 1..n
    objects: list[ObjectEffort] = field(default_factory=list)
    seconds: float = 0.0  # model time (embedding and decoding), not human time

    @property
    def clicks_per_object(self) -> float:
        return float(np.mean([o.clicks for o in self.objects])) if self.objects else 0.0

    @property
    def seconds_per_object(self) -> float:
        return self.seconds / max(len(self.objects), 1)

    def effort(self) -> list[dict[str, float]]:
        """Per object ``{"clicks", "seconds"}``, as the prompt tester records it."""
        share = self.seconds_per_object
        return [{"clicks": o.clicks, "seconds": share} for o in self.objects]


def clicks_at(round_index: int) -> int:
    """Clicks spent once round ``round_index`` (0: the first prompt) is done."""
    return 1 + 2 * round_index


def mask_ious(masks: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """IoU of each mask with its own true object, (n, H, W) x2 -> (n,)."""
    inter = (masks & truth).flatten(1).sum(1).float()
    union = (masks | truth).flatten(1).sum(1).float()
    return inter / union.clamp(min=1)


def annotate(
    segmenter: Segmenter,
    image: np.ndarray,
    labels: np.ndarray,
    rules: Rules = Rules(),
    batch_size: int = 64,
) -> ImageEffort:
    """Annotate every object of ``labels`` on ``image`` with ``segmenter``.

    ``image`` is normalised (H, W, 3) as in ``core.data``; returns the
    committed labels and the effort per object.
    """
    started = time.perf_counter()
    ids, centers, boxes = gt_prompts(labels)
    committed = np.zeros(labels.shape, np.int32)
    out = ImageEffort(committed)
    if len(ids) == 0:
        return out
    emb = segmenter.embed(image)
    gen = torch.Generator(segmenter.device).manual_seed(rules.seed)
    truth_all = torch.from_numpy(labels).to(segmenter.device)
    for start in range(0, len(ids), batch_size):
        chunk = slice(start, start + batch_size)
        wanted = torch.from_numpy(ids[chunk]).to(segmenter.device)
        truth = truth_all[None] == wanted[:, None, None]
        done, first = _prompt(
            segmenter, emb, truth, centers[chunk], boxes[chunk], rules, gen
        )
        for k, object_id in enumerate(ids[chunk]):
            clicks, iou, mask = done[k]
            reached = iou >= rules.iou
            if not reached:  # painted by hand after the budget
                mask = truth[k].cpu().numpy()
            out.objects.append(
                ObjectEffort(int(object_id), clicks, iou, reached, first[k])
            )
            committed[mask & (committed == 0)] = len(out.objects)
    out.seconds = time.perf_counter() - started
    return out


def _prompt(segmenter, emb, truth, centers, boxes, rules, gen):
    """Prompt a chunk of objects round by round until each passes or the budget
    ends; per object (clicks, IoU, mask) at its commit (or the last round), and
    the IoUs after the first prompt."""
    done: dict[int, tuple[int, float, np.ndarray]] = {}
    rounds = _rounds(
        segmenter,
        emb,
        truth,
        centers,
        boxes,
        rules.start == "box",
        rules.rounds,
        gen,
    )
    masks = first = None
    for it, masks in enumerate(rounds):
        ious = mask_ious(masks, truth).cpu().numpy()
        first = ious if first is None else first
        for k in np.flatnonzero(ious >= rules.iou):
            if k not in done:
                done[k] = (clicks_at(it), float(ious[k]), masks[k].cpu().numpy())
        if len(done) == len(truth):
            rounds.close()  # no corrective points for objects already committed
            break
    for k in range(len(truth)):
        if k not in done:  # the budget is spent: the last round's mask
            done[k] = (
                clicks_at(rules.rounds - 1),
                float(ious[k]),
                masks[k].cpu().numpy(),
            )
    return done, [float(x) for x in first]
