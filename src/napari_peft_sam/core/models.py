"""Base models: micro-sam's registry, custom checkpoints, and the 'tiny' test model.

Every base model is a ``segment_anything`` ``Sam`` built here from an
:class:`Architecture`, so the PEFT methods see the same module tree for
``tiny`` as for ``vit_b``. Named micro-sam models are resolved through
micro-sam's own pooch registry and cache (``MICROSAM_CACHEDIR``); a mirror can
replace the download host with ``NAPARI_PEFT_SAM_MODEL_MIRROR`` (useful on
clusters without internet).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import ModelNotAvailableError, UserError

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

MIRROR_ENV = "NAPARI_PEFT_SAM_MODEL_MIRROR"


@dataclass(frozen=True)
class Architecture:
    """The shape of a SAM model (image encoder, prompt encoder, mask decoder)."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    global_attn: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_dim: int = 256


ARCHITECTURES = {
    "vit_b": Architecture("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": Architecture("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": Architecture("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # Random weights, for tests: a training step on a CPU takes well under a second.
    "tiny": Architecture(
        "tiny",
        32,
        4,
        2,
        (1, 3),
        image_size=256,
        window_size=8,
        prompt_dim=32,
        decoder_mlp_dim=64,
        decoder_heads=2,
        iou_head_dim=32,
    ),
    # The shipped demo model (pretrained on synthetic nuclei, core/pretrain.py).
    "demo": Architecture(
        "demo",
        128,
        4,
        4,
        (1, 3),
        image_size=256,
        window_size=8,
        prompt_dim=64,
        decoder_mlp_dim=256,
        decoder_heads=4,
        iou_head_dim=64,
    ),
}


@dataclass(frozen=True)
class BaseModelInfo:
    """What a run card records about its base model."""

    name: str
    architecture: str
    source: str  # "micro-sam", "checkpoint" or "random"
    checkpoint: str | None = None
    hash: str | None = None
    image_size: int = 1024
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def microsam_model_names() -> list[str]:
    """The encoder models in micro-sam's registry (decoders excluded)."""
    from micro_sam.util import models

    return [n for n in models().registry if not n.endswith("_decoder")]


def demo_weights() -> Path:
    """The shipped demo model's weights (made by ``python -m napari_peft_sam.core.pretrain``)."""
    from importlib import resources

    return Path(str(resources.files("napari_peft_sam") / "assets" / "demo_sam.pt"))


def available_models() -> list[str]:
    """Every name ``--model`` accepts."""
    names = [n for n in microsam_model_names() if n[:5] in ARCHITECTURES]
    return [*names, "demo", "tiny"]


def architecture_of(name: str) -> Architecture:
    """The architecture of a model name: 'vit_b_lm' -> vit_b."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    prefix = name[:5]
    if prefix == "vit_t":
        raise UserError(
            f"Model {name!r} uses MobileSAM's vit_t encoder, which needs the "
            "mobile_sam package and has no PEFT support in micro-sam; pick a "
            "vit_b, vit_l or vit_h model."
        )
    if prefix in ARCHITECTURES and name in microsam_model_names():
        return ARCHITECTURES[prefix]
    raise UserError(
        f"Unknown model {name!r}; choose one of {', '.join(available_models())}, "
        "or pass an architecture (vit_b, vit_l, vit_h) with --checkpoint FILE."
    )


def build_sam(arch: Architecture, image_size: int | None = None) -> Sam:
    """A randomly initialised SAM of ``arch`` (weights are loaded separately)."""
    from functools import partial

    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    size = image_size or arch.image_size
    grid = size // arch.patch_size
    encoder = ImageEncoderViT(
        depth=arch.depth,
        embed_dim=arch.embed_dim,
        img_size=size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=arch.num_heads,
        patch_size=arch.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=arch.global_attn,
        window_size=arch.window_size,
        out_chans=arch.prompt_dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=arch.prompt_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(size, size),
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=arch.decoder_depth,
            embedding_dim=arch.prompt_dim,
            mlp_dim=arch.decoder_mlp_dim,
            num_heads=arch.decoder_heads,
        ),
        transformer_dim=arch.prompt_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=arch.iou_head_dim,
    )
    return Sam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def random_sam(arch: Architecture, seed: int = 0, image_size: int | None = None) -> Sam:
    """A SAM with reproducible random weights (for 'tiny' and benchmarks)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_sam(arch, image_size)


def file_hash(path: str | os.PathLike) -> str:
    """xxh128 of a file, in micro-sam's registry format."""
    import xxhash

    digest = xxhash.xxh128()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return f"xxh128:{digest.hexdigest()}"


def model_cache_dir() -> Path:
    """Where micro-sam keeps (and we look for) downloaded weights."""
    from micro_sam.util import microsam_cachedir

    return Path(microsam_cachedir()).expanduser() / "models"


def _model_registry():
    """micro-sam's pooch registry, with the download host swapped for a mirror."""
    from micro_sam.util import models

    registry = models()
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        registry.urls = {n: f"{mirror.rstrip('/')}/{n}" for n in registry.registry}
    return registry


def fetch_weights(name: str) -> Path:
    """The cached weights of micro-sam model ``name``, downloading them if needed.

    Raises ModelNotAvailableError with one sentence naming the model, the cache
    folder and the ``--checkpoint`` alternative when the file is not cached and
    cannot be downloaded.
    """
    registry = _model_registry()
    target = Path(registry.abspath) / name
    if target.exists():
        return target
    try:
        return Path(registry.fetch(name, progressbar=False))
    except Exception as error:  # pooch raises requests/OS/hash errors
        reason = (
            str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        )
        raise ModelNotAvailableError(
            f"Model {name!r} is not in the cache folder {target.parent} and could "
            f"not be downloaded ({reason}); place the file there as '{name}', or "
            f"pass --model {name[:5]} --checkpoint FILE."
        ) from None


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A SAM state dict from a plain or torch_em checkpoint, loaded safely."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint file {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(
            f"Checkpoint {path} cannot be loaded safely ({type(error).__name__}); "
            "export it to a plain state dict with "
            "micro_sam.util.export_custom_sam_model first."
        ) from None
    if isinstance(state, dict) and "model_state" in state:
        state = state["model_state"]
    if not isinstance(state, dict):
        raise UserError(f"Checkpoint {path} holds no state dict.")
    return {k.removeprefix("sam."): v for k, v in state.items()}


def load_base_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Sam, BaseModelInfo]:
    """Build base model ``name`` with its weights.

    ``name`` is a micro-sam model (weights from the cache or downloaded), an
    architecture with ``checkpoint`` (a custom weight file), or ``tiny``.
    """
    arch = architecture_of(name)
    size = image_size or arch.image_size
    if checkpoint is None and name == "tiny":
        sam = random_sam(arch, seed=0, image_size=size)
        info = BaseModelInfo(
            name, arch.name, "random", hash="random:seed0", image_size=size
        )
        return sam.to(device).eval(), info
    packaged = checkpoint is None and name == "demo"
    if packaged:
        checkpoint = demo_weights()
        if not checkpoint.is_file():
            raise UserError(
                "The demo model's weights are not built; run "
                "python -m napari_peft_sam.core.pretrain (about 30 CPU minutes)."
            )
    if (
        checkpoint is None
        and name in ARCHITECTURES
        and name not in microsam_model_names()
    ):
        raise UserError(f"Model {name!r} needs weights: pass --checkpoint FILE.")
    path = Path(checkpoint) if checkpoint is not None else fetch_weights(name)
    state = load_state_dict(path)
    sam = build_sam(arch, size)
    _check_architecture(state, arch, path)
    if size != arch.image_size:
        state = _resize_position_state(state, sam)
    _check_fits(state, sam, arch, path)
    missing, unexpected = sam.load_state_dict(state, strict=False)
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise UserError(
            f"Checkpoint {path} does not fit a {arch.name} SAM (first mismatch: "
            f"{first}); check --model."
        )
    source = (
        "package"
        if packaged
        else "checkpoint"
        if checkpoint is not None
        else "micro-sam"
    )
    info = BaseModelInfo(
        name, arch.name, source, str(path), file_hash(path), image_size=size
    )
    return sam.to(device).eval(), info


def _check_architecture(state: dict, arch: Architecture, path: Path) -> None:
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is not None and weight.shape[0] != arch.embed_dim:
        found = {a.embed_dim: n for n, a in ARCHITECTURES.items()}.get(
            weight.shape[0], f"embedding width {weight.shape[0]}"
        )
        raise UserError(
            f"Checkpoint {path} is a {found} model, not {arch.name}; pass "
            f"--model {found}."
        )


def _check_fits(state: dict, sam: Sam, arch: Architecture, path: Path) -> None:
    """Refuse a file that is not this architecture's full weights (e.g. a run's
    adapter) before loading it, in one sentence."""
    target = sam.state_dict()
    if "image_encoder.patch_embed.proj.weight" not in state:
        raise UserError(
            f"Checkpoint {path} is not the weights of a {arch.name} base model (it "
            "has no image encoder: a run's adapter?); pass a base model's checkpoint "
            "(a run is used with --run or --init-from)."
        )
    for key, value in state.items():
        want = target.get(key)
        if want is not None and tuple(getattr(value, "shape", ())) != want.shape:
            raise UserError(
                f"Checkpoint {path} does not fit a {arch.name} SAM ({key} has shape "
                f"{tuple(value.shape)}, not {tuple(want.shape)}); check --model."
            )


def _resize_position_state(state: dict, sam: Sam) -> dict:
    """Interpolate absolute and relative position tables to a new input size."""
    import torch.nn.functional as F

    target = sam.state_dict()
    out = dict(state)
    for key, value in state.items():
        want = target.get(key)
        if want is None or want.shape == value.shape:
            continue
        if key.endswith("pos_embed"):  # (1, H, W, C)
            out[key] = F.interpolate(
                value.permute(0, 3, 1, 2),
                size=want.shape[1:3],
                mode="bilinear",
                align_corners=False,
            ).permute(0, 2, 3, 1)
        elif "rel_pos" in key:  # (2 * size - 1, head_dim)
            out[key] = F.interpolate(
                value.T[None], size=want.shape[0], mode="linear", align_corners=False
            )[0].T
    return out
