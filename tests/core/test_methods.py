"""Contract suite run over every registered PEFT method on the 'tiny' model."""

import re

import pytest
import torch

from napari_peft_sam.core.checkpoints import load_adapter_into, save_tensors
from napari_peft_sam.core.errors import ConfigError, MethodUnavailableError
from napari_peft_sam.core.methods import (
    apply_method,
    available_methods,
    get_method,
    make_config,
    trainable_state,
)
from napari_peft_sam.core.models import load_base_model
from tests.helpers import make_image, perturb_trainable, sam_forward

RUNNABLE = [m for m in available_methods() if m != "qlora"]

# What each method may train inside the image encoder: (name pattern, blocks).
ALL, LATE = range(4), range(2, 4)
ENCODER_PATTERNS = {
    "lora": (r"\.(w_a|w_b)_linear_(q|v)\.", ALL),
    "late_lora": (r"\.(w_a|w_b)_linear_(q|k|v|1|2)\.", LATE),
    "adaptformer": (r"\.mlp\.(down_proj|up_proj|alpha)", ALL),
    "fact": (r"\.(FacTu|FacTv|q_FacTs|v_FacTs)\.", ALL),
    "ssf": (r"\.(scale|shift)$", ALL),
    "bias": (r"\.bias$", ALL),
    "layernorm": (r"\.norm[12]\.", ALL),
    "attention": (r"\.attn\.", ALL),
    "late_ft": (r".", LATE),
    "full": (r".", None),
    "freeze_encoder": (r"(?!)", ALL),
}


def adapted(method, **values):
    sam, _ = load_base_model("tiny")
    return apply_method(sam, make_config(method, values))


def test_registry_lists_every_required_method():
    required = {
        "lora",
        "adaptformer",
        "fact",
        "ssf",
        "bias",
        "layernorm",
        "attention",
        "full",
        "freeze_encoder",
        "late_lora",
        "late_ft",
        "qlora",
    }
    assert required <= set(available_methods())
    assert set(ENCODER_PATTERNS) == set(RUNNABLE)


@pytest.mark.parametrize("method", RUNNABLE)
def test_only_intended_parameters_train(method):
    sam = adapted(method)
    pattern, blocks = ENCODER_PATTERNS[method]
    encoder = [n for n, p in sam.image_encoder.named_parameters() if p.requires_grad]
    for name in encoder:
        assert re.search(pattern, name), name
        if blocks is not None:
            assert int(name.split(".")[1]) in blocks, name
    if method == "full":
        assert len(encoder) == len(list(sam.image_encoder.parameters()))
    elif method != "freeze_encoder":
        assert encoder, "the method trains nothing in the encoder"
    # micro-sam trains the prompt encoder and mask decoder alongside
    assert all(p.requires_grad for p in sam.mask_decoder.parameters())
    assert all(p.requires_grad for p in sam.prompt_encoder.parameters())


@pytest.mark.parametrize("method", RUNNABLE)
def test_freeze_switches_freeze_decoder_and_prompt_encoder(method):
    sam = adapted(method, freeze_mask_decoder=True, freeze_prompt_encoder=True)
    assert not any(p.requires_grad for p in sam.mask_decoder.parameters())
    assert not any(p.requires_grad for p in sam.prompt_encoder.parameters())


@pytest.mark.parametrize("method", RUNNABLE)
def test_forward_and_backward(method):
    sam = adapted(method)
    masks, iou = sam_forward(sam, make_image(256))
    assert masks.shape == (1, 3, 64, 64) and iou.shape == (1, 3)
    (masks.mean() + iou.mean()).backward()
    for name, p in sam.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"frozen {name} got a gradient"
        elif name.startswith("image_encoder."):  # box/mask prompt paths stay unused
            assert p.grad is not None, f"{name} got no gradient"
    assert sam.mask_decoder.iou_prediction_head.layers[0].weight.grad is not None


@pytest.mark.parametrize(
    "method", [m for m in RUNNABLE if get_method(m).config_cls.zero_init]
)
def test_zero_init_methods_leave_the_output_unchanged(method):
    base, _ = load_base_model("tiny")
    sam = adapted(method)
    image = make_image(256)
    with torch.no_grad():
        expected, _ = sam_forward(base, image)
        got, _ = sam_forward(sam.eval(), image)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", RUNNABLE)
def test_save_and_reload_give_identical_outputs(method, tmp_path):
    sam = adapted(method).eval()
    perturb_trainable(sam)
    path = save_tensors(tmp_path / "adapter.pt", trainable_state(sam))
    fresh = adapted(method).eval()
    load_adapter_into(fresh, path)
    image = make_image(256)
    with torch.no_grad():
        torch.testing.assert_close(sam_forward(fresh, image), sam_forward(sam, image))
    # only trained tensors are stored, never the frozen base
    saved = torch.load(path, weights_only=True)
    assert set(saved) == set(trainable_state(sam))


@pytest.mark.parametrize(
    ("method", "values", "field"),
    [
        ("lora", {"rank": 0}, "rank"),
        ("lora", {"alpha": -1}, "alpha"),
        ("lora", {"dropout": 1.0}, "dropout"),
        ("lora", {"targets": "q,z"}, "targets"),
        ("lora", {"scaling": "alpha*2"}, "scaling"),
        ("fact", {"rank": 0}, "rank"),
        ("fact", {"dropout": 1.5}, "dropout"),
        ("adaptformer", {"alpha": -0.5}, "alpha"),
        ("adaptformer", {"dropout": 1}, "dropout"),
        ("adaptformer", {"projection_size": 0}, "projection_size"),
        ("lora", {"rank": 2.5}, "rank"),
        ("lora", {"alpha": "nan"}, "alpha"),
    ],
)
def test_impossible_values_are_rejected_naming_the_field(method, values, field):
    with pytest.raises(ConfigError, match=rf"^{method}: {field} must be"):
        make_config(method, values)


def test_block_out_of_range_is_rejected_naming_the_field():
    sam, _ = load_base_model("tiny")
    with pytest.raises(ConfigError, match=r"blocks contains 7.*4 blocks"):
        apply_method(sam, make_config("lora", {"blocks": "1,7"}))
    # nothing was injected: the model is still usable as it was
    assert not any("w_a_linear" in n for n, _ in sam.named_parameters())


def test_unknown_hyperparameter_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"no hyperparameter 'rnk'.*rank"):
        make_config("lora", {"rnk": 3})


def test_strings_from_the_command_line_are_parsed():
    cfg = make_config(
        "lora", {"rank": "8", "alpha": "0.5", "targets": "q,k,mlp", "blocks": "0,2"}
    )
    assert (cfg.rank, cfg.alpha, cfg.targets, cfg.blocks) == (
        8,
        0.5,
        ("q", "k", "mlp"),
        (0, 2),
    )
    af = make_config("adaptformer", {"alpha": "learnable", "dropout": "none"})
    assert af.alpha == "learnable" and af.dropout is None


@pytest.mark.parametrize("method", RUNNABLE)
def test_config_round_trips_through_its_dict(method):
    from napari_peft_sam.core.methods import config_from_dict

    cfg = make_config(method)
    assert config_from_dict(cfg.to_dict()) == cfg


def test_lora_scaling_conventions():
    alpha, rank = 8.0, 16
    scales = {
        s: make_config(
            "lora", {"alpha": alpha, "rank": rank, "scaling": s}
        ).effective_scale()
        for s in ("alpha", "alpha/rank", "alpha/sqrt(rank)")
    }
    assert scales == {"alpha": 8.0, "alpha/rank": 0.5, "alpha/sqrt(rank)": 2.0}


def test_qlora_without_cuda_gives_a_clear_error_not_an_import_crash():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = make_config("qlora", {"rank": 4})  # the config itself is fine
    sam, _ = load_base_model("tiny")
    with pytest.raises(MethodUnavailableError, match="QLoRA needs a CUDA GPU"):
        apply_method(sam, cfg)
