"""The evaluation engine: mSA identical to elf, agreement with micro-sam, caching, CLI."""

import copy
import json

import numpy as np
import pytest
import torch
from elf.evaluation import mean_segmentation_accuracy as elf_msa

from napari_peft_sam.cli import main
from napari_peft_sam.core.config import DataSpec, ModelSpec, RunConfig, TrainConfig
from napari_peft_sam.core.data import Dataset
from napari_peft_sam.core.evaluation import evaluate, run_to_end
from napari_peft_sam.core.inference import Segmenter
from napari_peft_sam.core.methods import make_config
from napari_peft_sam.core.metrics import mean_segmentation_accuracy
from napari_peft_sam.core.models import load_base_model
from napari_peft_sam.core.sources import sample_dataset
from napari_peft_sam.core.training import train


def _random_pairs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    for k in range(n):
        shape = tuple(rng.integers(1, 48, size=2))
        gt = rng.integers(0, rng.integers(1, 9), shape) * rng.integers(1, 7)
        if k % 3 == 0:  # a perturbed copy: realistic partial overlaps
            seg = gt.copy()
            seg[rng.random(shape) < 0.2] = rng.integers(0, 5)
        else:
            seg = rng.integers(0, rng.integers(1, 9), shape)
        yield seg, gt


def _adversarial_pairs():
    gt = np.zeros((32, 32), np.int64)
    gt[2:12, 2:12], gt[15:25, 15:30], gt[0:2, 28:32] = 1, 7, 1000
    split = gt.copy()
    split[15:25, 22:30] = 8  # one object split in two
    merged = gt.copy()
    merged[merged == 7] = 1  # two objects merged
    two = np.zeros((1, 4), np.int64)
    two[0, :2] = 1
    halves = np.array([[1, 2, 0, 0]])  # ties at exactly IoU 0.5
    yield np.zeros_like(gt), gt  # empty prediction
    yield gt, np.zeros_like(gt)  # empty ground truth
    yield np.zeros_like(gt), np.zeros_like(gt)
    yield split, gt
    yield merged, gt
    yield gt * 3 + 5 * (gt > 0), gt  # non-consecutive ids
    yield halves, two
    yield two, halves


def test_msa_equals_elf_on_random_and_adversarial_pairs():
    worst = 0.0
    for seg, gt in [*_random_pairs(), *_adversarial_pairs()]:
        worst = max(worst, abs(mean_segmentation_accuracy(seg, gt) - elf_msa(seg, gt)))
    assert worst <= 1e-9


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """A tiny model trained briefly on nuclei, so that metrics are not all zero."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = RunConfig(
        DataSpec(dataset="nuclei"),
        ModelSpec("tiny"),
        make_config("full"),
        TrainConfig(
            lr=1e-3,
            iterations=150,
            n_objects=16,
            n_sub_iterations=2,
            val_interval=150,
            scheduler="none",
            val_patches=2,
        ),
    )
    run_to_end(train(cfg, run))
    return run


def test_embeddings_are_computed_once_per_image():
    sam, _ = load_base_model("tiny")
    calls = []
    sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    dataset = Dataset(sample_dataset("organoids").samples[:3], "three")
    result = run_to_end(
        evaluate(Segmenter(sam), dataset, ("single point", "single box", "ip", "ib"), 3)
    )
    assert len(calls) == 3
    assert set(result.metrics) == {"single point", "single box", "ip", "ib"}


def test_a_click_reuses_the_embedding():
    sam, _ = load_base_model("tiny")
    calls = []
    sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    segmenter = Segmenter(sam)
    image = sample_dataset("nuclei")[0].image
    first = segmenter.segment(image, np.array([[100, 120]]), np.array([1]))
    second = segmenter.segment(
        image, np.array([[100, 120], [30, 30]]), np.array([1, 0])
    )
    boxed = segmenter.segment(image, box=np.array([80, 90, 140, 150]))
    assert len(calls) == 1
    assert first.shape == second.shape == boxed.shape == image.shape[:2]


def test_missing_metric_is_reported_with_a_reason_not_zero():
    sam, _ = load_base_model("tiny")
    dataset = Dataset(sample_dataset("organoids").samples[:1], "one")
    result = run_to_end(evaluate(Segmenter(sam), dataset, ("ais", "single box"), 1))
    assert result.metrics["ais"] is None and "decoder" in result.missing["ais"]
    assert result.metrics["single box"] is not None


def test_evaluate_json_for_base_model_and_run(trained_tiny, capsys):
    argv = ["evaluate", "--dataset", "nuclei", "--json", "--iterations", "2"]
    assert main([*argv, "--model", "tiny", "--metrics", "single point,ib"]) == 0
    base = json.loads(capsys.readouterr().out)
    assert set(base) == {"single point", "ib"}
    assert main([*argv, "--run", str(trained_tiny)]) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert set(tuned) == {"single point", "single box", "ip", "ib"}
    card = json.loads((trained_tiny / "card.json").read_text())
    assert card["metrics"] == tuned  # the card records the same numbers
    assert tuned["single point"] > base["single point"]


@pytest.mark.slow
def test_prompt_metrics_agree_with_microsam(tmp_path):
    """Within 0.02 of micro-sam's path-based evaluation on the same model and images.

    single point and single box are deterministic (object centres and boxes);
    ip and ib differ only through the random corrective points (both sides
    draw them uniformly from the same regions) and micro-sam's uint8 input.
    """
    import imageio.v3 as iio
    from micro_sam.evaluation.evaluation import run_evaluation_for_iterative_prompting
    from micro_sam.evaluation.inference import run_inference_with_iterative_prompting
    from segment_anything import SamPredictor

    _, held_out = sample_dataset("nuclei").split(0.2, seed=0)
    images, gts = [], []
    for k, sample in enumerate(held_out):
        image = np.clip(np.round(sample.image), 0, 255).astype(np.uint8)
        iio.imwrite(tmp_path / f"im{k}.tif", image[..., 0])  # grayscale, as 2D
        iio.imwrite(tmp_path / f"gt{k}.tif", sample.labels.astype(np.uint32))
        images.append(str(tmp_path / f"im{k}.tif"))
        gts.append(str(tmp_path / f"gt{k}.tif"))
    # micro-sam's batched_inference scales prompts for a 1024 input whatever the
    # model's size (ResizeLongestSide(1024)), so compare on a 1024-input model:
    # the demo model with its position tables resized.
    sam, _ = load_base_model("demo", image_size=1024)
    ours = {}
    uint8_set = Dataset(
        [type(s)(np.round(s.image).clip(0, 255), s.labels, s.name) for s in held_out],
        "u8",
    )
    # ours on a copy: the fast path patches its model, micro-sam runs SAM's own
    result = run_to_end(evaluate(Segmenter(copy.deepcopy(sam)), uint8_set))
    ours.update(result.metrics)
    theirs = {}
    predictor = SamPredictor(sam)
    for start_with_box, first, last in (
        (False, "single point", "ip"),
        (True, "single box", "ib"),
    ):
        root = tmp_path / f"pred_{start_with_box}"
        torch.manual_seed(0)
        np.random.seed(0)
        run_inference_with_iterative_prompting(
            predictor,
            images,
            gts,
            embedding_dir=None,
            prediction_dir=str(root),
            start_with_box_prompt=start_with_box,
        )
        table = run_evaluation_for_iterative_prompting(
            gts,
            str(root),
            str(tmp_path / f"exp_{start_with_box}"),
            start_with_box_prompt=start_with_box,
        )
        theirs[first], theirs[last] = table["mSA"].iloc[0], table["mSA"].iloc[-1]
    print({k: (round(ours[k], 4), round(float(theirs[k]), 4)) for k in ours})
    assert max(ours[k] > 0 for k in ours)
    for key in ours:
        assert abs(ours[key] - theirs[key]) <= 0.02, key


def test_post_processing_search_picks_the_best_setting(monkeypatch):
    from napari_peft_sam.core import automatic

    dataset = Dataset(sample_dataset("organoids").samples[:2], "two")
    target = {"center_distance_threshold": 0.5, "boundary_distance_threshold": 0.7}

    def fake(kind, segmenter, image, decoder=None, settings=({},)):
        sample = next(s for s in dataset if s.image is image)
        return [
            sample.labels if s == target else np.zeros_like(sample.labels)
            for s in settings
        ]

    monkeypatch.setattr(automatic, "segmentations", fake)
    best, score = automatic.tune("ais", None, dataset)
    assert best == target and score == 1.0
