"""Mean segmentation accuracy, identical to ``elf.evaluation.mean_segmentation_accuracy``.

mSA is the mean over IoU thresholds 0.50, 0.55, ..., 0.95 of TP / (TP + FP + FN).
TP at a threshold is the size of the largest one-to-one matching between
predicted and true objects with IoU >= threshold (what elf's Hungarian
matching computes). Above 0.5 an object can overlap at most one partner that
much, so matching reduces to counting pairs; ties at exactly 0.5 fall back to
``linear_sum_assignment``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

THRESHOLDS = np.arange(0.5, 1.0, 0.05)


def pair_ious(
    segmentation: np.ndarray, groundtruth: np.ndarray
) -> tuple[np.ndarray, int, int]:
    """IoU of every overlapping (predicted, true) object pair, and the object counts.

    Returns an array of rows (pred index, true index, IoU) over the
    overlapping pairs only, with the number of predicted and true objects.
    """
    seg = np.asarray(segmentation).ravel().astype(np.int64)
    gt = np.asarray(groundtruth).ravel().astype(np.int64)
    seg_ids, seg_inv, seg_sizes = np.unique(
        seg, return_inverse=True, return_counts=True
    )
    gt_ids, gt_inv, gt_sizes = np.unique(gt, return_inverse=True, return_counts=True)
    pairs, counts = np.unique(seg_inv * len(gt_ids) + gt_inv, return_counts=True)
    p, t = pairs // len(gt_ids), pairs % len(gt_ids)
    keep = (seg_ids[p] != 0) & (gt_ids[t] != 0)
    p, t, overlap = p[keep], t[keep], counts[keep].astype(np.float64)
    union = np.maximum(seg_sizes[p] + gt_sizes[t] - overlap, 1e-7)
    n_pred = int(np.count_nonzero(seg_ids))
    n_true = int(np.count_nonzero(gt_ids))
    return np.stack([p, t, overlap / union], axis=1), n_pred, n_true


def _true_positives(pairs: np.ndarray, threshold: float) -> int:
    hits = pairs[pairs[:, 2] >= threshold]
    if len(hits) == 0:
        return 0
    p, t = hits[:, 0].astype(np.int64), hits[:, 1].astype(np.int64)
    if len(np.unique(p)) == len(p) and len(np.unique(t)) == len(t):
        return len(hits)
    # ties (IoU exactly 0.5): maximum bipartite matching
    _, p_idx = np.unique(p, return_inverse=True)
    _, t_idx = np.unique(t, return_inverse=True)
    graph = np.zeros((p_idx.max() + 1, t_idx.max() + 1))
    graph[p_idx, t_idx] = 1
    rows, cols = linear_sum_assignment(-graph)
    return int(graph[rows, cols].sum())


def segmentation_accuracies(
    segmentation: np.ndarray, groundtruth: np.ndarray, thresholds=THRESHOLDS
) -> np.ndarray:
    """TP / (TP + FP + FN) at each IoU threshold (0 where TP is 0, as elf)."""
    pairs, n_pred, n_true = pair_ious(segmentation, groundtruth)
    out = []
    for threshold in thresholds:
        tp = _true_positives(pairs, threshold)
        out.append(tp / (n_pred + n_true - tp) if tp > 0 else 0.0)
    return np.asarray(out)


def mean_segmentation_accuracy(
    segmentation: np.ndarray, groundtruth: np.ndarray
) -> float:
    """mSA: the mean of :func:`segmentation_accuracies` over 0.50 ... 0.95."""
    return float(np.mean(segmentation_accuracies(segmentation, groundtruth)))


def summary(segmentation: np.ndarray, groundtruth: np.ndarray) -> dict[str, float]:
    """mSA, SA50 and SA75 of one image."""
    acc = segmentation_accuracies(segmentation, groundtruth)
    return {"msa": float(np.mean(acc)), "sa50": float(acc[0]), "sa75": float(acc[5])}


def matched_iou(mask: np.ndarray, groundtruth: np.ndarray) -> tuple[int, float]:
    """The ground-truth object ``mask`` overlaps most, and their IoU (0, 0.0 if none)."""
    mask = np.asarray(mask, bool)
    ids, counts = np.unique(groundtruth[mask], return_counts=True)
    counts, ids = counts[ids > 0], ids[ids > 0]
    if not len(ids):
        return 0, 0.0
    best = int(ids[np.argmax(counts)])
    obj = groundtruth == best
    return best, float((mask & obj).sum() / (mask | obj).sum())
