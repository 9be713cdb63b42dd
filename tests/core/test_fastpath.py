"""The fast path equals segment_anything's reference path, for every PEFT method."""

import copy
from pathlib import Path

import pytest
import torch

from napari_peft_sam.core import decoding
from napari_peft_sam.core.config import DataSpec, ModelSpec, RunConfig, TrainConfig
from napari_peft_sam.core.data import Dataset
from napari_peft_sam.core.fastpath import enable_fast_path
from napari_peft_sam.core.methods import apply_method, available_methods, make_config
from napari_peft_sam.core.models import load_base_model
from napari_peft_sam.core.sources import sample_dataset
from napari_peft_sam.core.trainer import Trainer
from tests.helpers import make_image, perturb_trainable, sam_forward

METHODS = [m for m in available_methods() if m != "qlora"]


@pytest.mark.parametrize("method", METHODS)
def test_fast_encoder_and_masks_equal_the_reference(method):
    sam, _ = load_base_model("tiny")
    apply_method(sam, make_config(method))
    perturb_trainable(sam)
    fast = enable_fast_path(copy.deepcopy(sam))
    image = make_image(256, seed=3)
    with torch.no_grad():
        reference = sam.image_encoder(sam.preprocess(image))
        ours = fast.image_encoder(fast.preprocess(image))
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
        for got, want in zip(
            sam_forward(fast, image), sam_forward(sam, image), strict=True
        ):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_fast_prompt_encoder_matches_for_every_label_kind():
    sam, _ = load_base_model("tiny")
    fast = enable_fast_path(copy.deepcopy(sam))
    points = torch.rand(5, 3, 2) * 256
    labels = torch.tensor([[1, 0, -1]] * 5)
    for pad in (True, False):
        torch.testing.assert_close(
            fast.prompt_encoder._embed_points(points, labels, pad),
            sam.prompt_encoder._embed_points(points, labels, pad),
        )


def test_gradients_flow_through_the_relative_position_mask():
    sam, _ = load_base_model("tiny")
    apply_method(sam, make_config("full"))
    fast = enable_fast_path(copy.deepcopy(sam))
    image = make_image(256)
    for model in (sam, fast):
        model.image_encoder(model.preprocess(image)).square().mean().backward()
    for (name, a), (_, b) in zip(
        sam.named_parameters(), fast.named_parameters(), strict=True
    ):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_training_steps_give_the_same_loss_curve():
    """Five steps on identical data and seeds: losses agree to 1e-4 (float32)."""
    data = Dataset(sample_dataset("nuclei").samples[:3], "three")
    curves = []
    for fast in (False, True):
        config = RunConfig(
            DataSpec(dataset="nuclei"),
            ModelSpec("tiny"),
            make_config("lora", {"rank": 4}),
            TrainConfig(
                lr=1e-3,
                iterations=5,
                n_objects=4,
                n_sub_iterations=2,
                val_patches=1,
                fast_path=fast,
            ),
        )
        trainer = Trainer(config, Path("unused"), data)
        curves.append([trainer.train_step()[0] for _ in range(5)])
    for reference, ours in zip(*curves, strict=True):
        assert ours == pytest.approx(reference, abs=1e-4)


@pytest.mark.parametrize("method", ["lora", "full", "ssf"])
def test_padded_windows_and_lean_attention_equal_the_reference(method, monkeypatch):
    """tiny at 224 px: a 14 x 14 grid in padded 8 x 8 windows; lean in chunks,
    and not lean in the CPU's cache-sized chunks."""
    from napari_peft_sam.core import footprint

    # 5 grid rows per chunk of a global block: 3 chunks; windowed blocks: 2
    monkeypatch.setattr(footprint, "LEAN_ELEMENTS", 2 * 14 * 196 * 5)
    monkeypatch.setattr(footprint, "CACHE_ELEMENTS", 2 * 14 * 196 * 4)  # 4 chunks
    sam, _ = load_base_model("tiny", image_size=224)
    apply_method(sam, make_config(method))
    perturb_trainable(sam)
    image = make_image(224, seed=3)
    results = []
    for lean in (None, False, True):
        model = copy.deepcopy(sam)
        if lean is not None:
            enable_fast_path(model, lean=lean)
        out = model.image_encoder(model.preprocess(image))
        out.square().mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.detach(), grads))
    want, want_grads = results[0]
    assert want_grads
    for got, grads in results[1:]:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for name, grad in want_grads.items():
            torch.testing.assert_close(
                grads[name], grad, rtol=1e-4, atol=1e-6, msg=name
            )


@pytest.mark.parametrize("with_masks", [False, True])
def test_fast_decoder_equals_the_reference_for_many_objects(with_masks):
    """Five objects, with and without mask prompts: outputs and gradients agree."""
    from napari_peft_sam.core.objective import Prompts, decode

    sam, _ = load_base_model("tiny")
    apply_method(sam, make_config("full"))
    perturb_trainable(sam)
    assert decoding.upscaling_supported(sam.mask_decoder.output_upscaling)
    g = torch.Generator().manual_seed(0)
    grid = sam.prompt_encoder.image_embedding_size
    embedding = torch.randn(1, 32, *grid, generator=g)
    masks = torch.randn(5, 1, 4 * grid[0], 4 * grid[1], generator=g)
    prompts = Prompts(
        points=torch.rand(5, 3, 2, generator=g) * 256,
        labels=torch.tensor([[1, 0, 1]] * 5),
        masks=masks if with_masks else None,
    )
    results = []
    for model in (sam, enable_fast_path(copy.deepcopy(sam))):
        emb = embedding.clone().requires_grad_()
        low_res, iou = decode(model, emb, prompts, multimask=True)
        (low_res.square().mean() + iou.sum()).backward()
        grads = [p.grad for p in model.mask_decoder.parameters()]
        results.append((low_res.detach(), iou.detach(), emb.grad, grads))
    (want, want_iou, want_emb, want_grads), (got, iou, emb, grads) = results
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(iou, want_iou, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(emb, want_emb, rtol=1e-4, atol=1e-7)
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_fast_decoder_in_bfloat16_is_as_close_to_float32_as_the_reference():
    """Training under bfloat16 autocast on a CPU, the decoder takes its other
    kernels (SAM's three-step attention, with gradients on): its error against
    float32 stays that of the reference; so does inference's (flash kernel)."""
    from napari_peft_sam.core.objective import Prompts, decode

    sam, _ = load_base_model("tiny")
    perturb_trainable(sam)
    g = torch.Generator().manual_seed(1)
    grid = sam.prompt_encoder.image_embedding_size
    embedding = torch.randn(1, 32, *grid, generator=g)
    prompts = Prompts(
        points=torch.rand(25, 4, 2, generator=g) * 256,
        labels=torch.tensor([[1, 0, 1, 0]] * 25),
    )
    fast = enable_fast_path(copy.deepcopy(sam))
    with torch.no_grad():
        exact, _ = decode(sam, embedding, prompts, multimask=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reference, _ = decode(sam, embedding, prompts, multimask=True)
            inferred, _ = decode(fast, embedding, prompts, multimask=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained, _ = decode(fast, embedding, prompts, multimask=True)
    ref_error = (reference.float() - exact).abs().mean()
    for ours in (trained.detach(), inferred):
        assert ours.dtype == torch.bfloat16
        our_error = (ours.float() - exact).abs().mean()
        assert 0 < our_error < 1.5 * ref_error
