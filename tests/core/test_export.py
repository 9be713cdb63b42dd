"""Run folders and export: micro-sam loads what we write, with and without PEFT code.

The base model is a vit_b architecture with random weights at a 256 px input
(speed does not matter here, equality does).
"""

import json

import pytest
import torch
from micro_sam.models import peft_sam
from micro_sam.util import get_sam_model

from napari_peft_sam.core.checkpoints import export_run, load_run, read_card, save_run
from napari_peft_sam.core.errors import UserError
from napari_peft_sam.core.methods import apply_method, make_config
from napari_peft_sam.core.models import ARCHITECTURES, load_base_model, random_sam
from tests.helpers import make_image, perturb_trainable, sam_forward

SIZE = 256


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "vit_b_random.pt"
    torch.save(
        random_sam(ARCHITECTURES["vit_b"], seed=3, image_size=SIZE).state_dict(), path
    )
    return path


def _trained_run(checkpoint, run_dir, method, values):
    sam, info = load_base_model("vit_b", checkpoint=checkpoint, image_size=SIZE)
    cfg = make_config(method, values)
    apply_method(sam, cfg)
    perturb_trainable(sam, std=0.02)
    save_run(run_dir, sam, info, cfg)
    return sam.eval()


def _microsam_model(recipe):
    kwargs = dict(recipe["peft_kwargs"] or {})
    if kwargs:
        kwargs["peft_module"] = getattr(peft_sam, kwargs["peft_module"])
    predictor = get_sam_model(
        model_type=recipe["model_type"],
        checkpoint_path=recipe["checkpoint_path"],
        peft_kwargs=kwargs or None,
        device="cpu",
        image_size=recipe["image_size"],
    )
    return predictor.model.eval()


def _assert_same_masks(ours, theirs):
    image = make_image(SIZE, seed=5)
    with torch.no_grad():
        ours_logits, ours_iou = sam_forward(ours, image)
        theirs_logits, theirs_iou = sam_forward(theirs, image)
    torch.testing.assert_close(theirs_logits, ours_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(theirs_iou, ours_iou, rtol=1e-4, atol=1e-4)
    assert torch.equal(theirs_logits > 0, ours_logits > 0)


EXPORTS = [
    (
        "lora",
        {"rank": 4, "alpha": 4, "targets": "q,v,mlp", "blocks": "0,5,11"},
        "micro-sam",
    ),
    ("lora", {"rank": 4, "alpha": 4, "targets": "q,k,v,mlp"}, "merged"),
    ("lora", {"rank": 8, "alpha": 2, "scaling": "alpha/rank"}, "merged"),
    ("fact", {"rank": 4}, "micro-sam"),
    ("fact", {"rank": 4}, "merged"),
    ("ssf", {}, "merged"),
    ("adaptformer", {"alpha": 0.5, "projection_size": 16}, "micro-sam"),
    ("bias", {"blocks": "10,11"}, "merged"),
]


@pytest.mark.parametrize(("method", "values", "fmt"), EXPORTS)
def test_export_loads_in_microsam_with_the_same_masks(
    vit_b_checkpoint, tmp_path, method, values, fmt
):
    ours = _trained_run(vit_b_checkpoint, tmp_path / "run", method, values)
    recipe = export_run(tmp_path / "run", fmt, tmp_path / "export.pt")
    assert (recipe["peft_kwargs"] is None) == (fmt == "merged")
    assert json.loads((tmp_path / "export.pt.json").read_text()) == recipe
    _assert_same_masks(ours, _microsam_model(recipe))


def test_adaptformer_cannot_be_merged_and_says_so(vit_b_checkpoint, tmp_path):
    _trained_run(
        vit_b_checkpoint, tmp_path / "run", "adaptformer", {"projection_size": 8}
    )
    with pytest.raises(UserError, match="AdaptFormer cannot be merged"):
        export_run(tmp_path / "run", "merged", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_run_folder_round_trip_and_card(vit_b_checkpoint, tmp_path):
    ours = _trained_run(
        vit_b_checkpoint, tmp_path / "run", "lora", {"rank": 4, "alpha": 4}
    )
    card = read_card(tmp_path / "run")
    assert card["effective_lora_scale"] == 4.0
    assert card["base_model"]["hash"].startswith("xxh128:")
    assert card["micro_sam"]["peft_kwargs"]["peft_module"] == "LoRASurgery"
    assert {"torch", "micro_sam", "napari-peft-sam"} <= set(card["packages"])
    reloaded, _ = load_run(tmp_path / "run")
    _assert_same_masks(ours, reloaded)
    # the adapter holds only trained tensors: far smaller than the base
    adapter = (tmp_path / "run" / "adapter_best.pt").stat().st_size
    assert adapter < vit_b_checkpoint.stat().st_size / 10


def test_changed_base_weights_are_detected(vit_b_checkpoint, tmp_path):
    import shutil

    base = tmp_path / "base.pt"
    shutil.copy(vit_b_checkpoint, base)
    _trained_run(base, tmp_path / "run", "bias", {})
    state = torch.load(base, weights_only=True)
    state["mask_decoder.iou_token.weight"] += 1
    torch.save(state, base)
    with pytest.raises(UserError, match="differ from those this run was trained on"):
        load_run(tmp_path / "run")


def test_tiny_cannot_export_to_microsam(tmp_path):
    sam, info = load_base_model("tiny")
    cfg = make_config("lora", {"rank": 2})
    save_run(tmp_path / "run", apply_method(sam, cfg), info, cfg)
    with pytest.raises(UserError, match="micro-sam cannot rebuild a tiny model"):
        export_run(tmp_path / "run", "micro-sam", tmp_path / "x.pt")
