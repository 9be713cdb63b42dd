"""Run folders and export: micro-sam loads what we write, with and without PEFT code.

The base model is a vit_b architecture with random weights at a 256 px input
(speed does not matter here, equality does); the annotator check at 1024 px,
the size micro-sam's annotator builds, is marked slow.
"""

import json

import numpy as np
import pytest
import torch
from micro_sam.models import peft_sam
from micro_sam.util import get_sam_model

from napari_peft_sam.core.checkpoints import load_run, read_card, save_run, save_tensors
from napari_peft_sam.core.errors import UserError
from napari_peft_sam.core.export import export_run
from napari_peft_sam.core.methods import apply_method, make_config
from napari_peft_sam.core.models import ARCHITECTURES, load_base_model, random_sam
from tests.helpers import make_image, perturb_trainable, sam_forward

SIZE = 256
NUCLEI = {"data": {"dataset": "nuclei", "val_fraction": 0.2, "split_seed": 0}}


def _random_vit_b(tmp_path_factory, size):
    path = tmp_path_factory.mktemp("base") / f"vit_b_random_{size}.pt"
    sam = random_sam(ARCHITECTURES["vit_b"], seed=3, image_size=size)
    torch.save(sam.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory):
    return _random_vit_b(tmp_path_factory, SIZE)


@pytest.fixture(scope="module")
def vit_b_1024(tmp_path_factory):
    return _random_vit_b(tmp_path_factory, 1024)


def trained_run(checkpoint, run_dir, method, values, decoder=False, size=SIZE):
    """A run folder as training leaves it (trained tensors perturbed, not trained)."""
    sam, info = load_base_model("vit_b", checkpoint=checkpoint, image_size=size)
    cfg = make_config(method, values)
    apply_method(sam, cfg)
    perturb_trainable(sam, std=0.02)
    save_run(run_dir, sam, info, cfg, run_config=NUCLEI)
    if decoder:  # micro-sam's UNETR at its random initialisation: it finds objects
        from napari_peft_sam.core.decoder import (
            build_unetr,
            decoder_path,
            decoder_state,
        )

        torch.manual_seed(0)
        save_tensors(decoder_path(run_dir), decoder_state(build_unetr(sam)))
    return sam.eval()


def _microsam_model(recipe):
    # the PEFT settings come from the checkpoint itself, as micro-sam's dev branch reads them
    state = torch.load(recipe["checkpoint_path"], weights_only=True)
    kwargs = dict(state.get("peft_kwargs") or {})
    assert kwargs == (recipe["peft_kwargs"] or {})
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
    ours = trained_run(vit_b_checkpoint, tmp_path / "run", method, values)
    recipe = export_run(tmp_path / "run", fmt, tmp_path / "export.pt")
    assert (recipe["peft_kwargs"] is None) == (fmt == "merged")
    assert json.loads((tmp_path / "export.pt.json").read_text()) == recipe
    assert str(tmp_path / "export.pt") in recipe["how_to_open"]
    _assert_same_masks(ours, _microsam_model(recipe))


def test_microsam_export_is_a_trainer_checkpoint_with_peft_kwargs(
    vit_b_checkpoint, tmp_path
):
    trained_run(vit_b_checkpoint, tmp_path / "run", "fact", {"rank": 4}, decoder=True)
    export_run(tmp_path / "run", "micro-sam", tmp_path / "peft.pt")
    state = torch.load(tmp_path / "peft.pt", weights_only=True)
    assert set(state) == {"model_state", "peft_kwargs", "decoder_state"}
    assert state["peft_kwargs"]["peft_module"] == "FacTSurgery"
    assert state["peft_kwargs"]["rank"] == 4
    assert len(state["decoder_state"]) == 66  # micro-sam's UNETR decoder


def test_adaptformer_cannot_be_merged_and_says_so(vit_b_checkpoint, tmp_path):
    trained_run(
        vit_b_checkpoint, tmp_path / "run", "adaptformer", {"projection_size": 8}
    )
    for fmt in ("merged", "bioimageio"):
        with pytest.raises(UserError, match="AdaptFormer cannot be merged"):
            export_run(tmp_path / "run", fmt, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_export_never_replaces_what_it_was_not_asked_to(vit_b_checkpoint, tmp_path):
    run = tmp_path / "run"
    trained_run(vit_b_checkpoint, run, "bias", {"blocks": "11"})
    adapter = (run / "adapter_best.pt").read_bytes()
    with pytest.raises(UserError, match="one of the run's own files"):
        export_run(run, "merged", run / "adapter_best.pt", overwrite=True)
    with pytest.raises(UserError, match="one of the run's own files"):
        export_run(run, "merged", run / "card", overwrite=True)  # card.json beside it
    assert (run / "adapter_best.pt").read_bytes() == adapter
    target = tmp_path / "merged.pt"
    target.write_text("keep me")
    with pytest.raises(UserError, match="already exists; .* --overwrite"):
        export_run(run, "merged", target)
    assert target.read_text() == "keep me"
    export_run(run, "merged", target, overwrite=True)
    assert "model_state" not in torch.load(target, weights_only=True)  # no decoder
    export_run(run, "merged", run / "merged.pt")  # inside the run, another name: fine
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        export_run(run, "merged", tmp_path / "folder.pt", overwrite=True)
    with pytest.raises(UserError, match="does not exist"):
        export_run(tmp_path / "nowhere", "merged", tmp_path / "y.pt")


def test_run_folder_round_trip_and_card(vit_b_checkpoint, tmp_path):
    ours = trained_run(
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
    trained_run(base, tmp_path / "run", "bias", {})
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


# -- micro-sam's annotator opens the merged export and uses our decoder -------------


def _annotator(path, image, size):
    """Predictor, decoder and embeddings as micro-sam's annotator loads them."""
    if size == 1024:  # the annotator's own state object, exactly its code path
        from micro_sam.sam_annotator._state import AnnotatorState

        state = AnnotatorState()
        state.reset_state()
        state.initialize_predictor(
            image,
            "vit_b",
            ndim=2,
            checkpoint_path=str(path),
            device="cpu",
            use_cli=True,
        )
        loaded = state.predictor, state.decoder, state.image_embeddings
        state.reset_state()
        return loaded
    # the same calls, with the input size the annotator does not let one choose
    from micro_sam.instance_segmentation import get_decoder
    from micro_sam.util import precompute_image_embeddings

    predictor, state = get_sam_model(
        "vit_b", "cpu", str(path), return_state=True, image_size=size
    )
    decoder = get_decoder(predictor.model.image_encoder, state["decoder_state"], "cpu")
    embeddings = precompute_image_embeddings(predictor, image, ndim=2, verbose=False)
    return predictor, decoder, embeddings


def _annotator_image(size):
    from napari_peft_sam.core.sources import sample_dataset

    image = sample_dataset("nuclei")[2].image.astype(np.uint8)  # spans 0..255
    reps = size // image.shape[0]  # the model's own size: no resizing on either side
    return np.tile(image, (reps, reps, 1))


def _differing(theirs, mine) -> float:
    """The fraction of pixels that differ: those whose logits are within float
    rounding of 0. Two SAM implementations (ours fuses attention) agree on the
    embedding to about 1e-6; at 1024 px a handful of a million pixels can flip.
    """
    return float(np.mean(theirs != mine))


@pytest.mark.parametrize("size", [SIZE, pytest.param(1024, marks=pytest.mark.slow)])
def test_annotator_opens_merged_export_with_the_same_masks(request, tmp_path, size):
    from micro_sam.instance_segmentation import get_instance_segmentation_generator
    from micro_sam.sam_annotator.util import prompt_segmentation

    from napari_peft_sam.core import automatic
    from napari_peft_sam.core.decoder import load_adapter_decoder
    from napari_peft_sam.core.inference import Segmenter

    base = request.getfixturevalue("vit_b_checkpoint" if size == SIZE else "vit_b_1024")
    run = tmp_path / "run"
    ours = trained_run(base, run, "lora", {"rank": 4, "alpha": 4}, True, size)
    recipe = export_run(run, "merged", tmp_path / "merged.pt")
    assert recipe["decoder"]
    if size == 1024:
        assert "micro_sam.annotator_2d" in recipe["how_to_open"]
    image = _annotator_image(size)
    predictor, decoder, embeddings = _annotator(tmp_path / "merged.pt", image, size)
    assert decoder is not None

    segmenter = Segmenter(ours)
    for y, x in [(40, 60), (128, 128), (200, 90)]:
        theirs = prompt_segmentation(
            predictor,
            np.array([[y, x]]),
            np.array([1]),
            [],
            [],
            image.shape[:2],
            False,
            image_embeddings=embeddings,
        )
        mine = segmenter.segment(image.astype(np.float32), np.array([[x, y]]), [1])
        assert theirs.any() and _differing(theirs.astype(bool), mine) <= 1e-4

    generator = get_instance_segmentation_generator(predictor, False, decoder)
    generator.initialize(image, image_embeddings=embeddings)
    theirs = generator.generate()
    our_decoder = load_adapter_decoder(run, ours)
    mine = automatic.segmentations(
        "ais", segmenter, image.astype(np.float32), our_decoder
    )[0]
    assert theirs.max() > 1 and theirs.max() == mine.max()
    assert _differing(theirs, mine) <= 1e-3  # watershed may move a boundary pixel
