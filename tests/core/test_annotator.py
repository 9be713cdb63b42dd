"""The simulated annotator: clicks counted as micro-sam's iterative rules spend them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_peft_sam.core.annotator import Rules, annotate, clicks_at
from napari_peft_sam.core.prompts import bbox_masks


def rectangles() -> np.ndarray:
    labels = np.zeros((64, 64), np.int32)
    labels[4:20, 6:30] = 1
    labels[30:60, 10:22] = 2
    labels[40:52, 35:60] = 3
    return labels


class BoxFiller:
    """A fake model: empty masks for ``blind`` rounds, then each prompt's box
    filled (exact for rectangles). Counts its calls."""

    device = torch.device("cpu")

    def __init__(self, labels: np.ndarray, blind: int = 0) -> None:
        self.truth = torch.from_numpy(labels)
        self.blind, self.calls = blind, 0

    def embed(self, image, key=None):
        return None

    def predict(self, emb, points, labels, boxes, masks, multimask):
        self.calls += 1
        shape = self.truth.shape
        n = len(boxes) if boxes is not None else len(points)
        if self.calls <= self.blind or boxes is None:
            return torch.zeros((n, *shape), dtype=torch.bool), None
        inclusive = boxes.clone()
        inclusive[:, 2:] -= 1  # micro-sam's boxes end one past the object
        return bbox_masks(inclusive, shape), None


def test_rules_and_clicks() -> None:
    assert Rules().rounds == 8  # 15 clicks: micro-sam's 8 evaluation rounds
    assert [clicks_at(r) for r in range(3)] == [1, 3, 5]
    with pytest.raises(ValueError):
        Rules(start="lasso")
    with pytest.raises(ValueError):
        Rules(iou=0)


def test_a_perfect_model_takes_one_box_per_object() -> None:
    labels = rectangles()
    image = np.zeros((64, 64, 3), np.float32)
    effort = annotate(BoxFiller(labels), image, labels, Rules(iou=0.9))
    assert [o.clicks for o in effort.objects] == [1, 1, 1]
    assert all(o.reached and o.iou > 0.9 for o in effort.objects)
    assert effort.clicks_per_object == 1.0
    # the committed objects are the true ones, ids 1..n
    assert set(np.unique(effort.labels)) == {0, 1, 2, 3}
    assert ((effort.labels > 0) == (labels > 0)).mean() > 0.98


def test_corrective_rounds_cost_two_clicks_each() -> None:
    labels = rectangles()
    image = np.zeros((64, 64, 3), np.float32)
    model = BoxFiller(labels, blind=2)
    effort = annotate(model, image, labels, Rules(iou=0.9))
    assert [o.clicks for o in effort.objects] == [5, 5, 5]
    assert model.calls == 3  # stops once every object is committed


def test_a_useless_model_spends_the_budget_and_the_object_is_painted() -> None:
    labels = rectangles()
    image = np.zeros((64, 64, 3), np.float32)
    model = BoxFiller(labels, blind=100)
    effort = annotate(model, image, labels, Rules(budget=9))
    assert [o.clicks for o in effort.objects] == [9, 9, 9]
    assert model.calls == Rules(budget=9).rounds == 5
    assert not any(o.reached for o in effort.objects)
    assert ((effort.labels > 0) == (labels > 0)).all()  # painted by hand
    assert [e["clicks"] for e in effort.effort()] == [9, 9, 9]


def test_real_model_effort_is_recorded(tiny_sam) -> None:
    from napari_peft_sam.core.inference import Segmenter

    labels = rectangles()
    rng = np.random.default_rng(0)
    image = (rng.random((64, 64, 3)) * 60 + (labels > 0)[..., None] * 150).astype(
        np.float32
    )
    effort = annotate(Segmenter(tiny_sam), image, labels, Rules(start="point"))
    assert len(effort.objects) == 3 and effort.seconds > 0
    assert all(1 <= o.clicks <= 15 and o.clicks % 2 == 1 for o in effort.objects)
    assert all(o.reached == (o.iou >= 0.8) for o in effort.objects)
