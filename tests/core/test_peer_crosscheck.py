"""Cross-checks against micro-sam's own PEFT implementation and published counts."""

import copy

import pytest
import torch
from micro_sam.models.peft_sam import LoRASurgery, PEFT_Sam

from napari_peft_sam.core.methods import apply_method, count_trainable, make_config
from napari_peft_sam.core.models import ARCHITECTURES, build_sam, load_base_model
from tests.helpers import make_image, perturb_trainable


def _ours_and_microsam(alpha, targets=("q", "v")):
    base, _ = load_base_model("tiny")
    ours = apply_method(
        copy.deepcopy(base),
        make_config("lora", {"rank": 4, "alpha": alpha, "targets": targets}),
    )
    perturb_trainable(ours)
    theirs = PEFT_Sam(
        copy.deepcopy(base),
        rank=4,
        peft_module=LoRASurgery,
        update_matrices=list(targets),
    ).sam
    # identical parameter names: micro-sam loads our state dict as it is
    theirs.load_state_dict(ours.state_dict())
    return base.eval(), ours.eval(), theirs.eval()


def test_lora_alpha_1_equals_microsam_lorasurgery():
    _, ours, theirs = _ours_and_microsam(alpha=1.0, targets=("q", "k", "v"))
    x = ours.preprocess(make_image(256))
    with torch.no_grad():
        torch.testing.assert_close(
            ours.image_encoder(x), theirs.image_encoder(x), rtol=0, atol=1e-6
        )


def test_lora_alpha_4_is_exactly_four_times_the_update():
    _, ours, theirs = _ours_and_microsam(alpha=4.0)
    x = torch.randn(1, 16, 16, 32)
    ours_qkv, theirs_qkv = (
        ours.image_encoder.blocks[0].attn.qkv,
        theirs.image_encoder.blocks[0].attn.qkv,
    )
    with torch.no_grad():
        plain = ours_qkv.qkv_proj(x)
        ours_update = ours_qkv(x) - plain
        theirs_update = theirs_qkv(x) - plain
    assert theirs_update.abs().max() > 1e-3  # the update is not trivially zero
    torch.testing.assert_close(ours_update, 4 * theirs_update, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("method", "values", "encoder_millions"),
    [
        ("lora", {"rank": 32}, "1.18"),
        ("fact", {"rank": 16}, "0.30"),
        ("adaptformer", {"projection_size": 64}, "1.19"),
        ("ssf", {}, "0.20"),
        ("bias", {}, "0.10"),
        ("layernorm", {}, "0.04"),
        ("attention", {}, "28.4"),
        ("full", {}, "89.7"),
        ("late_lora", {}, "2.36"),
        ("late_ft", {}, "42.6"),
    ],
)
def test_trainable_counts_on_vit_b_match_microsam(method, values, encoder_millions):
    with torch.device("meta"):  # shapes only: no memory, no weights needed
        sam = build_sam(ARCHITECTURES["vit_b"])
    apply_method(sam, make_config(method, values))
    # micro-sam's table rounds: compare to as many decimals as it prints
    decimals = len(encoder_millions.split(".")[1])
    millions = count_trainable(sam.image_encoder) / 1e6
    assert f"{millions:.{decimals}f}" == encoder_millions
    # prompt encoder + mask decoder train too: 4.06M on vit_b
    assert count_trainable(sam) - count_trainable(sam.image_encoder) == 4_064_560
