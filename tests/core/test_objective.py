"""The training objective's pieces equal their plain definitions (draw for draw)."""

import pytest
import torch
import torch.nn.functional as F

from napari_peft_sam.core.objective import mask_loss_sums, upsample
from napari_peft_sam.core.prompts import (
    bbox_masks,
    boxes_from_masks,
    corrective_points,
    random_pixel,
)


def reference_random_pixel(regions, generator):
    """The r-th pixel by one running count over all pixels."""
    n, h, w = regions.shape
    running = regions.reshape(n, -1).cumsum(dim=1)
    draw = torch.rand(n, generator=generator, dtype=torch.float64)
    rank = (draw * running[:, -1].double()).long() + 1
    index = torch.searchsorted(running, rank[:, None]).squeeze(1).clamp(max=h * w - 1)
    return torch.stack([index % w, index // w], dim=1)


def reference_corrective_points(truth, prediction, generator):
    """micro-sam's regions made as masks, then one draw from each."""
    has = lambda m: m.flatten(1).any(dim=1)[:, None, None]  # noqa: E731
    missed = truth & ~prediction
    positive = torch.where(has(missed), missed, truth & prediction)
    positive = torch.where(has(positive), positive, truth)
    extra = prediction & ~truth
    ring = bbox_masks(boxes_from_masks(truth), truth.shape[1:], margin=3) & ~truth
    negative = torch.where(has(extra), extra, torch.where(has(ring), ring, ~truth))
    return torch.stack(
        [
            reference_random_pixel(positive, generator),
            reference_random_pixel(negative, generator),
        ],
        dim=1,
    )


def random_masks(g, n, h, w):
    """Blobs of random size and place, some empty, some full, some at a border."""
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None]
    masks = []
    for _ in range(n):
        cy, cx = (
            torch.randint(0, h, (1,), generator=g),
            torch.randint(0, w, (1,), generator=g),
        )
        r = torch.rand(1, generator=g) * max(h, w) / 2
        blob = (ys - cy) ** 2 + (xs - cx) ** 2 <= r**2
        kind = int(torch.randint(0, 8, (1,), generator=g))
        if kind == 0:
            blob[:] = False
        elif kind == 1:
            blob[:] = True
        elif kind == 2:
            blob &= torch.rand(h, w, generator=g) < 0.5
        masks.append(blob)
    return torch.stack(masks)


@pytest.mark.parametrize("seed", range(30))
def test_random_pixel_and_corrective_points_draw_as_the_plain_definitions(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 12, (1,), generator=g))
    h, w = (int(v) for v in torch.randint(1, 40, (2,), generator=g))
    truth, prediction = random_masks(g, n, h, w), random_masks(g, n, h, w)
    if seed % 3 == 0:  # predictions close to the truth: the fallbacks matter
        prediction = truth.clone()
        prediction[:, : h // 3] = False
    draws = [torch.Generator().manual_seed(seed) for _ in range(4)]
    assert torch.equal(
        random_pixel(truth, draws[0]), reference_random_pixel(truth, draws[1])
    )
    points, labels = corrective_points(truth, prediction, draws[2])
    assert torch.equal(points, reference_corrective_points(truth, prediction, draws[3]))
    assert labels.tolist() == [[1, 0]] * n
    # every point lies in its region (for objects with an error of each kind)
    for k in range(n):
        (px, py), (nx, ny) = points[k].tolist()
        missed, extra = truth[k] & ~prediction[k], prediction[k] & ~truth[k]
        if missed.any():
            assert missed[py, px]
        if extra.any():
            assert extra[ny, nx]


def test_upsample_equals_interpolate_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 16, 24, generator=g, requires_grad=True)
    grad = torch.randn(5, 3, 64, 96, generator=g)
    ours = upsample(x, (64, 96))
    want = F.interpolate(x, size=(64, 96), mode="bilinear", align_corners=False)
    assert torch.equal(ours, want)
    (got,) = torch.autograd.grad(ours, x, grad)
    (expected,) = torch.autograd.grad(want, x, grad)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_mask_loss_sums_gradient_equals_the_plain_dice():
    g = torch.Generator().manual_seed(1)
    low_res = torch.randn(6, 3, 16, 16, generator=g, requires_grad=True)
    iou_pred = torch.rand(6, 3, generator=g, requires_grad=True)
    truth = random_masks(g, 6, 64, 64)
    truth[:2] = False  # empty targets; the second, all but certain background:
    with torch.no_grad():  # its denominator is below eps, clamped
        low_res[1] -= 30
    dice, mse, _ = mask_loss_sums(low_res, iou_pred, truth)
    (dice + mse).backward()
    ours = low_res.grad.clone(), iou_pred.grad.clone()

    low_res.grad = iou_pred.grad = None
    logits = F.interpolate(low_res, size=(64, 64), mode="bilinear", align_corners=False)
    probs, target = torch.sigmoid(logits), truth[:, None].float()
    num = (probs * target).sum((-2, -1))
    den = (probs * probs).sum((-2, -1)) + (target * target).sum((-2, -1))
    plain = (1 - 2 * num / den.clamp(min=1e-6)).amin(dim=1).sum()
    hard = probs > 0.5
    inter = (hard & truth[:, None]).sum((-2, -1))
    union = (hard | truth[:, None]).sum((-2, -1))
    plain_mse = F.mse_loss(iou_pred, inter / (union + 1e-7), reduction="sum")
    (plain + plain_mse).backward()
    torch.testing.assert_close(dice, plain)
    torch.testing.assert_close(mse, plain_mse)
    torch.testing.assert_close(ours[0], low_res.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours[1], iou_pred.grad)


def test_the_loss_keeps_float32_sums_under_bfloat16_autocast():
    """The decoder runs under autocast; the Dice sums over a patch must not be
    matrix products rounded to bfloat16."""
    g = torch.Generator().manual_seed(2)
    low_res = torch.randn(4, 1, 32, 32, generator=g)
    iou_pred = torch.rand(4, 1, generator=g)
    truth = random_masks(g, 4, 128, 128)
    truth[:, :8] = True  # no empty target
    want, _, _ = mask_loss_sums(low_res, iou_pred, truth)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _, _ = mask_loss_sums(low_res, iou_pred, truth)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
