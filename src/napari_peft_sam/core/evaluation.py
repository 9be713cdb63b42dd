"""The study's metrics in memory: single point, single box, ip, ib (and ais, amg).

Each metric is a mean segmentation accuracy (see ``core.metrics``). Prompts
are derived from the ground truth as micro-sam's evaluation derives them:
the first point of an object is its centre (the pixel farthest from its
boundary), the box its bounding box; every further iteration adds one positive
and one negative corrective point per object (``core.prompts``, micro-sam's
``IterativePromptGenerator``), and ip / ib report the state after the last of
8 iterations. Corrective points are drawn at random, like micro-sam's, so ip
and ib differ from micro-sam's run by sampling noise only; the first
iteration (single point, single box) is deterministic.

Every image is embedded once per model; all prompt metrics reuse it.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from . import catalog
from . import metrics as m
from .automatic import segmentations, tune
from .data import Dataset
from .events import ProgressEvent, run_to_end  # noqa: F401  (re-exported)
from .inference import Segmenter, masks_to_segmentation
from .prompts import corrective_points

PROMPT_METRICS = catalog.PROMPT
ALL_METRICS = catalog.NAMES


@dataclass
class EvalResult:
    metrics: dict[str, float | None]
    per_image: dict[str, list[float]] = field(default_factory=dict)
    sa50: dict[str, float] = field(default_factory=dict)
    sa75: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)  # ais/amg post-processing
    card_error: str | None = None  # why the run's card could not take the numbers
    kind: str = "evaluation"

    def to_dict(self) -> dict:
        return {
            "metrics": self.metrics,
            "per_image": self.per_image,
            "sa50": self.sa50,
            "sa75": self.sa75,
            "missing": self.missing,
            "settings": self.settings,
        }


def gt_prompts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object ids, centre points (x, y) and boxes (x0, y0, x1, y1) from labels."""
    from micro_sam.util import get_centers_and_bounding_boxes

    ids = np.unique(labels)[1:]
    centers, boxes = get_centers_and_bounding_boxes(labels.astype(np.int64))
    points = np.array([centers[i][::-1] for i in ids], dtype=np.float32).reshape(-1, 2)
    bbox = np.array([boxes[i] for i in ids], dtype=np.float32).reshape(-1, 4)[
        :, [1, 0, 3, 2]
    ]
    return ids, points, bbox


def _rounds(segmenter, emb, truth, centers, boxes, start_with_box, n_rounds, gen):
    """Masks (n, H, W) of one chunk of objects after each prompting round."""
    device = segmenter.device
    points = labels = box = None
    if start_with_box:
        box = torch.from_numpy(boxes).to(device)
    else:
        points = torch.from_numpy(centers).to(device)[:, None]
        labels = torch.ones(points.shape[:2], dtype=torch.int64, device=device)
    for it in range(n_rounds):
        multimask = it == 0 and not start_with_box
        masks, _ = segmenter.predict(emb, points, labels, box, None, multimask)
        yield masks
        if it == n_rounds - 1:
            return
        new_points, new_labels = corrective_points(truth, masks, gen)
        new_points = new_points.float()
        points = new_points if points is None else torch.cat([points, new_points], 1)
        labels = new_labels if labels is None else torch.cat([labels, new_labels], 1)


def iterative_prompting(
    segmenter: Segmenter,
    image: np.ndarray,
    labels: np.ndarray,
    start_with_box: bool,
    n_iterations: int = 8,
    seed: int = 0,
    batch_size: int = 64,
    keep: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Instance segmentations after prompting rounds.

    Parameters
    ----------
    segmenter, image, labels
        The model, a normalised (H, W, 3) image and its ground-truth instances.
    start_with_box
        Start from each object's box (ib), else from its centre point (ip).
    n_iterations
        Prompting rounds: the first prompt, then corrective points.
    seed
        Seeds the corrective points' draws.
    batch_size
        Objects prompted together (bounds the memory of full-size masks).
    keep
        The rounds to return (indices into ``range(n_iterations)``, -1 the
        last); all by default. Only these are turned into instance labels,
        and no round after the last kept one is computed.
    """
    keep = range(n_iterations) if keep is None else keep
    keep = [k % n_iterations for k in keep]
    ids, centers, boxes = gt_prompts(labels)
    shape = labels.shape
    if len(ids) == 0:
        return [np.zeros(shape, np.int32) for _ in keep]
    emb = segmenter.embed(image)
    gen = torch.Generator(segmenter.device).manual_seed(seed)
    truth_all = torch.from_numpy(labels).to(segmenter.device)
    outputs: dict[int, list[np.ndarray]] = {k: [] for k in keep}
    for start in range(0, len(ids), batch_size):
        chunk = slice(start, start + batch_size)
        wanted = torch.from_numpy(ids[chunk]).to(segmenter.device)
        truth = truth_all[None] == wanted[:, None, None]
        rounds = _rounds(
            segmenter,
            emb,
            truth,
            centers[chunk],
            boxes[chunk],
            start_with_box,
            max(keep) + 1,
            gen,
        )
        for it, masks in enumerate(rounds):
            if it in outputs:
                outputs[it].append(masks.cpu().numpy())
    return [masks_to_segmentation(np.concatenate(outputs[k]), shape) for k in keep]


def evaluate(
    segmenter: Segmenter,
    dataset: Dataset,
    metrics: Sequence[str] = PROMPT_METRICS,
    n_iterations: int = 8,
    seed: int = 0,
    decoder=None,
    tune_on: Dataset | None = None,
) -> Generator[ProgressEvent, None, EvalResult]:
    """Compute ``metrics`` over ``dataset``; yields progress, returns the result.

    ``ais`` needs ``decoder`` (a run trained ``with_decoder``); without one it
    is reported missing, with the reason. ``ais`` and ``amg`` use micro-sam's
    default post-processing, or the best setting of a small search on
    ``tune_on`` (a validation set, never the evaluated images).
    """
    unknown = set(metrics) - set(ALL_METRICS)
    if unknown:
        from .errors import UserError

        raise UserError(
            f"Unknown metric {sorted(unknown)[0]!r}; choose from {', '.join(ALL_METRICS)}."
        )
    per_image: dict[str, list[dict]] = {name: [] for name in metrics}
    missing = {
        m_.name: "the model has no instance-segmentation decoder (train with "
        "--with-decoder)"
        for m_ in catalog.METRICS
        if m_.needs_decoder and m_.name in metrics and decoder is None
    }
    automatic = [m_.name for m_ in catalog.METRICS if m_.automatic]
    settings = {kind: {} for kind in automatic}
    for kind in automatic:
        if tune_on is not None and kind in metrics and kind not in missing:
            settings[kind], _ = tune(kind, segmenter, tune_on, decoder)
    for k, sample in enumerate(dataset):
        for first, last in ((a.name, b.name) for a, b in catalog.PROMPT_PAIRS):
            start_with_box = catalog.get(first).prompt == "box"
            if first not in metrics and last not in metrics:
                continue
            rounds = n_iterations if last in metrics else 1
            segs = iterative_prompting(
                segmenter,
                sample.image,
                sample.labels,
                start_with_box,
                rounds,
                seed + k,
                keep=sorted({0, rounds - 1}),
            )
            if first in metrics:
                per_image[first].append(m.summary(segs[0], sample.labels))
            if last in metrics:
                per_image[last].append(m.summary(segs[-1], sample.labels))
        for kind in automatic:
            if kind in metrics and kind not in missing:
                (seg,) = segmentations(
                    kind, segmenter, sample.image, decoder, [settings[kind]]
                )
                per_image[kind].append(m.summary(seg, sample.labels))
        yield ProgressEvent(k + 1, len(dataset), sample.name)
    result = EvalResult(metrics={}, missing=missing, settings=settings)
    for name in metrics:
        rows = per_image[name]
        if name in missing or not rows:
            result.metrics[name] = None
            continue
        result.metrics[name] = float(np.mean([r["msa"] for r in rows]))
        result.per_image[name] = [r["msa"] for r in rows]
        result.sa50[name] = float(np.mean([r["sa50"] for r in rows]))
        result.sa75[name] = float(np.mean([r["sa75"] for r in rows]))
    return result


def evaluate_model(
    dataset: Dataset,
    metrics: Sequence[str] = PROMPT_METRICS,
    run_dir=None,
    tag: str = "best",
    model: str | None = None,
    checkpoint=None,
    image_size: int | None = None,
    device: str = "auto",
    n_iterations: int = 8,
    tune_on: Dataset | None = None,
    precision: str = "float32",
    refuse_missing: bool = False,
) -> Generator[ProgressEvent, None, EvalResult]:
    """Evaluate a run folder or a base model; a run's card receives the numbers.

    A run is evaluated as it was trained: ``checkpoint`` and an ``image_size``
    other than the run's are refused. ``refuse_missing``: a metric the model
    cannot compute (ais without a decoder) is a UserError before any work,
    instead of a missing number.

    ``precision`` (``float32``, ``bfloat16`` or ``auto``: this machine's
    choice for the model, ``core.device.autocast_for(..., purpose="infer")``)
    sets the inference precision; float32 by default, so that numbers stay
    comparable across machines.
    """
    from .checkpoints import load_run
    from .device import autocast_for, resolve_device
    from .models import load_base_model

    _check_request(metrics, run_dir, tag, checkpoint, image_size, refuse_missing)
    torch_device = resolve_device(device)
    decoder = None
    if run_dir is not None:
        from .decoder import load_adapter_decoder

        sam, card = load_run(run_dir, tag)
        decoder = load_adapter_decoder(run_dir, sam, tag, torch_device)
        model = (card.get("base_model") or {}).get("name")
    else:
        sam, _ = load_base_model(model, checkpoint, image_size)
    autocast = autocast_for(
        torch_device, model, precision, "infer", sam.image_encoder.img_size
    )
    segmenter = Segmenter(sam, torch_device, autocast=autocast)
    result = yield from evaluate(
        segmenter, dataset, metrics, n_iterations, decoder=decoder, tune_on=tune_on
    )
    if run_dir is not None:
        _record(run_dir, dataset, tag, result)
    return result


def _check_request(metrics, run_dir, tag, checkpoint, image_size, refuse_missing):
    from .errors import UserError

    if run_dir is not None:
        from .runfolder import read_card

        size = read_card(run_dir)["base_model"]["image_size"]
        if checkpoint is not None:
            raise UserError(
                "--checkpoint applies to a base model (--model); a run is evaluated "
                "with the base model it was trained on: drop --checkpoint."
            )
        if image_size is not None and image_size != size:
            raise UserError(
                f"This run was trained at {size} px and is evaluated at that size; "
                f"drop --image-size {image_size} (it applies to a base model, --model)."
            )
    if not refuse_missing:
        return
    from .decoder import decoder_path

    has_decoder = run_dir is not None and decoder_path(run_dir, tag).is_file()
    for name in metrics:
        if catalog.get(name).needs_decoder and not has_decoder:
            what = "this run" if run_dir is not None else "a base model"
            raise UserError(
                f"{name} needs an instance-segmentation decoder, which {what} does "
                "not have; drop it from --metrics or evaluate a run trained with "
                "--with-decoder."
            )


def _record(run_dir, dataset: Dataset, tag: str, result: EvalResult) -> None:
    """Add an evaluation to the run's card (merged under the card's lock).

    A card that cannot be written (a read-only folder, a full disk) does not
    lose the numbers: ``result.card_error`` says why, the caller shows both.
    """
    from .errors import UserError
    from .runfolder import update_card

    def add(card: dict) -> None:
        card.setdefault("metrics", {}).update(
            {k: v for k, v in result.metrics.items() if v is not None}
        )
        card.setdefault("evaluations", []).append(
            {
                "dataset": dataset.source,
                "images": len(dataset),
                "image_names": [s.name for s in dataset],
                "adapter": tag,
                **result.to_dict(),
            }
        )

    try:
        update_card(run_dir, add)
    except (UserError, OSError) as error:
        result.card_error = str(error)
