"""Prompts derived from ground truth, vectorised over objects (no Python loops).

They follow micro-sam's ``PointAndBoxPromptGenerator`` and
``IterativePromptGenerator``: the same regions and fallbacks, each point drawn
uniformly from its region, but for all objects at once on the model's device
and without host synchronisation. Coordinates are returned in SAM's (x, y)
order; masks are ``(n, H, W)`` bool tensors.
"""

from __future__ import annotations

import torch


def random_pixel(
    regions: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """One uniformly random (x, y) pixel of each region; (n, H, W) -> (n, 2).

    Draws the r-th pixel of each region through a running count (10x faster
    than a random field over all pixels). An empty region yields its last
    pixel; callers pass non-empty ones.
    """
    n, h, w = regions.shape
    running = regions.reshape(n, -1).cumsum(dim=1, dtype=torch.int32)
    counts = running[:, -1].double()
    draw = torch.rand(
        n, generator=generator, device=regions.device, dtype=torch.float64
    )
    rank = (draw * counts).long() + 1
    index = torch.searchsorted(running, rank.to(torch.int32)[:, None]).squeeze(1)
    index = index.clamp(max=h * w - 1)
    return torch.stack([index % w, index // w], dim=1)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes (x0, y0, x1, y1), inclusive of the last pixel, (n, H, W) -> (n, 4)."""
    n, h, w = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ys, h).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1)
    x0 = torch.where(cols, xs, w).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1)
    return torch.stack([x0, y0, x1, y1], dim=1)


def distort_boxes(
    boxes: torch.Tensor, factor: float, shape: tuple[int, int], generator
) -> torch.Tensor:
    """Shift each box edge by up to ``factor`` of the box size (micro-sam's 2.5 %)."""
    if factor <= 0:
        return boxes.float()
    boxes = boxes.float()
    size = (boxes[:, 2:] - boxes[:, :2] + 1).repeat(1, 2)
    noise = torch.rand(boxes.shape, generator=generator, device=boxes.device) * 2 - 1
    out = boxes + noise * factor * size
    high = torch.tensor([shape[1] - 1, shape[0] - 1] * 2, device=boxes.device)
    return torch.minimum(out.clamp(min=0), high)


def bbox_masks(
    boxes: torch.Tensor, shape: tuple[int, int], margin: int = 0
) -> torch.Tensor:
    """(n, H, W) masks of the boxes grown by ``margin`` pixels."""
    ys = torch.arange(shape[0], device=boxes.device)[None, :, None]
    xs = torch.arange(shape[1], device=boxes.device)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    return (
        (ys >= y0 - margin)
        & (ys <= y1 + margin)
        & (xs >= x0 - margin)
        & (xs <= x1 + margin)
    )


def corrective_points(
    truth: torch.Tensor, prediction: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One positive and one negative point per object where the mask is wrong.

    Positive: in the missed part of the object, else where the prediction is
    already right. Negative: in the false-positive part, else in a 3-pixel ring
    of the object's box, else anywhere in the background (micro-sam's order).
    Returns (n, 2, 2) coordinates and (n, 2) labels (1 positive, 0 negative).
    """
    missed = truth & ~prediction
    has = lambda m: m.flatten(1).any(dim=1)[:, None, None]  # noqa: E731
    positive_region = torch.where(has(missed), missed, truth & prediction)
    positive_region = torch.where(has(positive_region), positive_region, truth)
    extra = prediction & ~truth
    ring = bbox_masks(boxes_from_masks(truth), truth.shape[1:], margin=3) & ~truth
    negative_region = torch.where(
        has(extra), extra, torch.where(has(ring), ring, ~truth)
    )
    points = torch.stack(
        [
            random_pixel(positive_region, generator),
            random_pixel(negative_region, generator),
        ],
        dim=1,
    )
    labels = torch.tensor([1, 0], device=truth.device).expand(len(truth), 2)
    return points, labels


def one_hot_objects(
    labels: torch.Tensor, n_objects: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Masks of up to ``n_objects`` randomly chosen objects of a label patch.

    ``labels`` holds ids 1..k; returns (min(k, n_objects), H, W) bool.
    """
    k = int(labels.max())
    chosen = torch.randperm(k, generator=generator, device="cpu")[:n_objects] + 1
    return labels[None] == chosen.to(labels.device)[:, None, None]
